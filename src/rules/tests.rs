//! Unit tests of rule compilation: URLs, secrets, cookie domains, scopes, domains and conditions.

use std::path::Path;

use super::*;
use crate::config::Config;

use crate::test_yaml::rule;

/// The rules' configurations, read through the real configuration schema.
fn configs(rules: &[String]) -> Vec<RuleConfig> {
    let text = format!(
        "session:\n  secrets: [\"0123456789abcdef0123456789abcdef\"]\nrules:\n{}",
        rules.concat()
    );
    match Config::parse(&text, "rules.yaml", Path::new("/etc"), &|_| None) {
        Ok(config) => config.rules,
        Err(e) => panic!("should parse:\n{e}\n--- text:\n{text}"),
    }
}

fn ruleset(rules: &[String]) -> RuleSet {
    RuleSet::compile(&configs(rules), DefaultAction::Allow).expect("rules compile")
}

fn single(overrides: &str) -> Arc<Rule> {
    let set = ruleset(&[rule("corp", overrides)]);
    set.all()[0].clone()
}

fn names<'a>(rules: impl Iterator<Item = &'a Arc<Rule>>) -> Vec<&'a str> {
    rules.map(|r| r.name.as_str()).collect()
}

#[test]
fn rule_is_enabled_by_default() {
    assert!(single("").enabled);
}

#[test]
fn disabled_rules_are_kept_in_order_but_skipped_by_enabled() {
    let set = ruleset(&[
        rule("one", ""),
        rule("two", "enabled: false"),
        rule("three", "enabled: true"),
    ]);
    assert_eq!(names(set.all().iter()), vec!["one", "two", "three"]);
    assert_eq!(names(set.enabled()), vec!["one", "three"]);
}

#[test]
fn by_name_finds_enabled_and_disabled_rules() {
    let set = ruleset(&[rule("one", ""), rule("two", "enabled: false")]);
    assert_eq!(set.by_name("two").map(|r| r.enabled), Some(false));
    assert_eq!(set.by_name("one").map(|r| r.enabled), Some(true));
    assert!(set.by_name("three").is_none());
}

#[test]
fn empty_rule_set_has_no_rules_and_keeps_its_default_action() {
    let set = RuleSet::empty(DefaultAction::Deny);
    assert!(set.all().is_empty());
    assert_eq!(set.default_action, DefaultAction::Deny);
    assert!(set.callback_rule("app.example.com").is_none());
    assert!(set.endpoint_rule("app.example.com").is_none());
}

#[test]
fn callback_rule_is_the_enabled_rule_whose_redirect_url_is_on_the_host() {
    let set = ruleset(&[
        rule("app", ""),
        rule("admin", "redirect_url: https://admin.example.com/oauth2/callback"),
    ]);
    assert_eq!(
        set.callback_rule("admin.example.com").map(|r| r.name.as_str()),
        Some("admin")
    );
    assert_eq!(
        set.callback_rule("app.example.com").map(|r| r.name.as_str()),
        Some("app")
    );
    assert!(set.callback_rule("other.example.com").is_none());
}

#[test]
fn callback_rule_ignores_disabled_rules() {
    let set = ruleset(&[rule("disabled", "enabled: false")]);
    assert!(set.callback_rule("app.example.com").is_none());

    let set = ruleset(&[rule("disabled", "enabled: false"), rule("active", "")]);
    assert_eq!(
        set.callback_rule("app.example.com").map(|r| r.name.as_str()),
        Some("active")
    );
}

#[test]
fn callback_rule_is_the_first_of_rules_sharing_a_redirect_host() {
    let set = ruleset(&[rule("first", ""), rule("second", "")]);
    assert_eq!(
        set.callback_rule("app.example.com").map(|r| r.name.as_str()),
        Some("first")
    );
}

#[test]
fn endpoint_rule_prefers_the_redirect_host_over_an_earlier_domains_match() {
    let set = ruleset(&[
        rule(
            "wide",
            "
            redirect_url: https://login.example.com/oauth2/callback
            domains: [\"*.example.com\"]
            ",
        ),
        rule("app", "domains: [app.example.com]"),
    ]);
    assert_eq!(
        set.endpoint_rule("app.example.com").map(|r| r.name.as_str()),
        Some("app")
    );
}

#[test]
fn endpoint_rule_falls_back_to_the_first_rule_whose_domains_match() {
    let set = ruleset(&[
        rule("shop", "domains: [shop.example.org]"),
        rule("wide", "domains: [\"*.example.com\"]"),
        rule("wider", "domains: [\"*\"]"),
    ]);
    let pick = |host| set.endpoint_rule(host).map(|r| r.name.as_str());
    assert_eq!(pick("docs.example.com"), Some("wide"));
    assert_eq!(pick("shop.example.org"), Some("shop"));
    assert_eq!(pick("elsewhere.net"), Some("wider"));
}

#[test]
fn endpoint_rule_is_none_when_no_enabled_rule_owns_the_host() {
    let set = ruleset(&[
        rule("wide", "domains: [\"*.example.com\"]"),
        rule(
            "disabled",
            "
            enabled: false
            domains: [\"*\"]
            ",
        ),
    ]);
    assert!(set.endpoint_rule("elsewhere.net").is_none());
    assert!(set.endpoint_rule("example.com").is_none());
}

#[test]
fn endpoint_rule_skips_disabled_rules() {
    let set = ruleset(&[
        rule("disabled", "enabled: false"),
        rule(
            "active",
            "
            redirect_url: https://login.example.com/oauth2/callback
            domains: [\"*.example.com\"]
            ",
        ),
    ]);
    assert_eq!(
        set.endpoint_rule("app.example.com").map(|r| r.name.as_str()),
        Some("active")
    );
}

#[test]
fn post_logout_redirect_url_defaults_to_the_redirect_origin() {
    assert_eq!(
        single("").post_logout_redirect_url.as_str(),
        "https://app.example.com/"
    );
    assert_eq!(
        single("redirect_url: https://app.example.com:8443/oauth2/callback")
            .post_logout_redirect_url
            .as_str(),
        "https://app.example.com:8443/"
    );
}

#[test]
fn post_logout_redirect_url_is_kept_when_given() {
    let rule = single("post_logout_redirect_url: https://www.example.com/goodbye");
    assert_eq!(
        rule.post_logout_redirect_url.as_str(),
        "https://www.example.com/goodbye"
    );
}

#[test]
fn rule_without_domains_governs_every_host() {
    let rule = single("");
    assert!(rule.domains.is_empty());
    for host in ["app.example.com", "elsewhere.net", "localhost", "[::1]"] {
        assert!(rule.governs(host), "{host}");
    }
}

#[test]
fn domains_scope_the_hosts_a_rule_governs() {
    let rule = single("domains: [app.example.com, \"*.internal.example.org\"]");
    assert!(rule.governs("app.example.com"));
    assert!(rule.governs("a.internal.example.org"));
    assert!(rule.governs("a.b.internal.example.org"));
    assert!(!rule.governs("internal.example.org"));
    assert!(!rule.governs("www.example.com"));
    assert!(!rule.governs("app.example.com.evil.net"));

    let star = single("domains: [\"*\"]");
    assert!(star.governs("anything.at.all"));
}

#[test]
fn bad_domains_pattern_is_reported_with_its_index() {
    let mut configs = configs(&[rule("corp", "domains: [ok.example.com]")]);
    configs[0].domains.push("a.*.com".into());
    let errors = RuleSet::compile(&configs, DefaultAction::Allow).expect_err("bad pattern");
    assert_eq!(
        errors
            .iter()
            .map(|e| (e.rule.as_str(), e.field.as_str()))
            .collect::<Vec<_>>(),
        vec![("corp", "domains[1]")]
    );
}

#[test]
fn cookie_domain_covers_its_apex_and_every_subdomain() {
    let rule = single("cookie_domain: .example.com");
    for host in ["example.com", "app.example.com", "a.b.example.com"] {
        assert!(rule.cookie_domain_covers(host), "{host}");
    }
    for host in ["badexample.com", "example.com.evil.com", "example.org", "com", ""] {
        assert!(!rule.cookie_domain_covers(host), "{host}");
    }
}

#[test]
fn without_cookie_domain_no_host_is_covered() {
    let rule = single("cookie_domain: \"\"");
    assert_eq!(rule.cookie_domain, None);
    assert!(!rule.cookie_domain_covers("app.example.com"));
}

#[test]
fn cookie_domain_is_held_lowercase_with_a_leading_dot() {
    assert_eq!(
        single("cookie_domain: Example.COM").cookie_domain.as_deref(),
        Some(".example.com")
    );
    assert_eq!(
        single("cookie_domain: .example.com").cookie_domain.as_deref(),
        Some(".example.com")
    );
}

#[test]
fn redirect_host_is_normalized_like_request_hosts() {
    let rule = single("redirect_url: https://App.Example.COM:8443/oauth2/callback");
    assert_eq!(rule.redirect_host, "app.example.com");
}

#[test]
fn discovery_url_defaults_to_the_issuer_well_known_document() {
    assert_eq!(
        single("issuer: https://idp.example.com/realms/corp")
            .discovery_url
            .as_str(),
        "https://idp.example.com/realms/corp/.well-known/openid-configuration"
    );
    assert_eq!(
        single("issuer: https://idp.example.com/realms/corp/")
            .discovery_url
            .as_str(),
        "https://idp.example.com/realms/corp/.well-known/openid-configuration"
    );
}

#[test]
fn discovery_url_may_point_elsewhere_while_the_issuer_stays() {
    let rule = single("discovery_url: http://keycloak:8080/realms/corp/.well-known/openid-configuration");
    assert_eq!(
        rule.discovery_url.as_str(),
        "http://keycloak:8080/realms/corp/.well-known/openid-configuration"
    );
    assert_eq!(rule.issuer, "https://idp.example.com");
}

#[test]
fn rules_with_the_same_issuer_and_discovery_share_a_provider() {
    let set = ruleset(&[
        rule("a", ""),
        rule("b", "client_id: other"),
        rule("c", "issuer: https://idp2.example.com"),
    ]);
    let keys: Vec<&str> = set.all().iter().map(|r| r.provider_key.as_str()).collect();
    assert_eq!(keys[0], keys[1]);
    assert_ne!(keys[0], keys[2]);
}

#[test]
fn rule_fields_are_carried_from_the_configuration() {
    let rule = single(
        "
        scope: openid email
        upstream_token: access_token
        audiences: [api://corp]
        allowed: { emails: [Alice@Example.com], email_domains: [.Example.ORG], groups: [Admins] }
        authorization:
          mode: blacklist
          conditions:
            - { path: /admin }
            - { path: /ops, match: exact }
        ",
    );
    assert_eq!(rule.name, "corp");
    assert_eq!(rule.client_id, "gateway");
    assert_eq!(rule.client_secret.expose(), "client-secret");
    assert_eq!(
        rule.redirect_url.as_str(),
        "https://app.example.com/oauth2/callback"
    );
    assert_eq!(rule.scope, "openid email");
    assert_eq!(rule.upstream_token, UpstreamToken::AccessToken);
    assert_eq!(rule.mode, AuthorizationMode::Blacklist);
    assert_eq!(rule.conditions.len(), 2);
    assert_eq!(rule.allowed.emails, vec!["alice@example.com"]);
    assert_eq!(rule.allowed.email_domains, vec!["example.org"]);
    assert_eq!(rule.allowed.groups, vec!["Admins"]);
    assert_eq!(rule.source.name, "corp");
}

#[test]
fn upstream_token_defaults_to_id_token() {
    assert_eq!(single("").upstream_token, UpstreamToken::IdToken);
}

#[test]
fn client_secret_never_prints() {
    let rule = single("client_secret: hunter2-very-secret");
    let shown = format!("{:?}", rule.client_secret);
    assert!(!shown.contains("hunter2"), "{shown}");
}

#[test]
fn compile_reports_duplicate_names() {
    let mut configs = configs(&[rule("corp", "")]);
    configs.push(configs[0].clone());
    let errors = RuleSet::compile(&configs, DefaultAction::Allow).expect_err("duplicate");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].rule, "corp");
    assert_eq!(errors[0].field, "name");
}

#[test]
fn compile_reports_every_problem_of_every_rule() {
    let mut configs = configs(&[rule("one", ""), rule("two", ""), rule("three", "")]);
    configs[0].issuer = "http://idp.example.com".into();
    configs[0].redirect_url = "https://app.example.com/cb".into();
    configs[1].client_id = " ".into();
    configs[1].audiences = vec![String::new()];
    configs[1].allowed.email_domains = vec!["someone@example.com".into()];
    let errors = RuleSet::compile(&configs, DefaultAction::Allow).expect_err("bad rules");
    let found: Vec<(&str, &str)> = errors
        .iter()
        .map(|e| (e.rule.as_str(), e.field.as_str()))
        .collect();
    assert_eq!(
        found,
        vec![
            ("one", "issuer"),
            ("one", "redirect_url"),
            ("two", "client_id"),
            ("two", "audiences[0]"),
            ("two", "allowed.email_domains[0]"),
        ]
    );
}

#[test]
fn redirect_url_with_query_or_fragment_is_refused() {
    for url in [
        "https://app.example.com/oauth2/callback?x=1",
        "https://app.example.com/oauth2/callback#f",
    ] {
        let mut configs = configs(&[rule("corp", "")]);
        configs[0].redirect_url = url.into();
        let errors = RuleSet::compile(&configs, DefaultAction::Allow).expect_err(url);
        assert!(errors.iter().all(|e| e.field == "redirect_url"), "{errors:?}");
    }
}

#[test]
fn rule_error_display_names_rule_and_field() {
    let e = RuleError {
        rule: "corp".into(),
        field: "issuer".into(),
        message: "is not a URL".into(),
    };
    assert_eq!(e.to_string(), "rule \"corp\": field \"issuer\": is not a URL");
}

#[test]
fn rule_set_handle_swaps_the_whole_set() {
    let handle = RuleSetHandle::new(ruleset(&[rule("old", "")]));
    let before = handle.load_full();
    handle.store(ruleset(&[rule("new", ""), rule("newer", "")]));
    assert_eq!(names(before.all().iter()), vec!["old"]);
    assert_eq!(names(handle.load().all().iter()), vec!["new", "newer"]);
}
