//! Unit tests of routing and explain, through the real configuration schema; property tests in `properties`.

use std::path::Path;

use serde_json::json;

use super::*;
use crate::config::{Config, ConfigErrors};
use crate::rules::normalize::normalize_host;

use crate::test_yaml::{dedent, rule};

mod index;
mod properties;

/// A rule of `mode` with these conditions (YAML flow mappings, one per entry).
fn rule_with(name: &str, mode: &str, conditions: &[&str], extra: &str) -> String {
    let mut overrides = format!("authorization:\n  mode: {mode}\n  conditions:");
    if conditions.is_empty() {
        overrides.push_str(" []");
    }
    for c in conditions {
        overrides.push_str(&format!("\n    - {c}"));
    }
    overrides.push('\n');
    overrides.push_str(&dedent(extra));
    rule(name, &overrides)
}

fn whitelist(name: &str, conditions: &[&str]) -> String {
    rule_with(name, "whitelist", conditions, "")
}

fn blacklist(name: &str, conditions: &[&str]) -> String {
    rule_with(name, "blacklist", conditions, "")
}

/// The rules compiled through the real configuration schema.
fn rules_with_default(default_action: &str, rules: &[String]) -> RuleSet {
    let text = format!(
        "default_action: {default_action}\nsession:\n  secrets: [\"0123456789abcdef0123456789abcdef\"]\nrules:\n{}",
        rules.concat()
    );
    let config = Config::parse(&text, "decision.yaml", Path::new("/etc"), &|_| None)
        .unwrap_or_else(|e| panic!("should parse:\n{e}\n--- text:\n{text}"));
    RuleSet::compile(&config.rules, config.default_action).expect("rules compile")
}

fn rules(rules: &[String]) -> RuleSet {
    rules_with_default("allow", rules)
}

/// A route without the borrowed rule, so tests can compare it.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Callback(String),
    Public(String, usize),
    Login(String, Option<usize>),
    Default(DefaultAction),
}

fn public(rule: &str, condition: usize) -> Seen {
    Seen::Public(rule.into(), condition)
}

/// Login required by a whitelist rule that matched nothing.
fn login(rule: &str) -> Seen {
    Seen::Login(rule.into(), None)
}

/// Login required by a blacklist rule's condition.
fn login_by(rule: &str, condition: usize) -> Seen {
    Seen::Login(rule.into(), Some(condition))
}

fn callback(rule: &str) -> Seen {
    Seen::Callback(rule.into())
}

const ALLOW: Seen = Seen::Default(DefaultAction::Allow);
const DENY: Seen = Seen::Default(DefaultAction::Deny);

/// Routes a request as the Envoy adapter does: `authority` and `raw_path` as sent.
fn decide(set: &RuleSet, authority: &str, raw_path: &str) -> Seen {
    let host = normalize_host(authority);
    let path = RequestPath::parse(raw_path);
    match route(set, &host, &path) {
        Route::Callback(rule) => Seen::Callback(rule.name.clone()),
        Route::Public { rule, condition } => Seen::Public(rule.name.clone(), condition),
        Route::Login { rule, condition } => Seen::Login(rule.name.clone(), condition),
        Route::Default(action) => Seen::Default(action),
    }
}

// ---- modes ----

#[test]
fn whitelist_rule_allows_matching_request_without_login() {
    let set = rules(&[whitelist("corp", &["{ path: /public }"])]);
    assert_eq!(
        decide(&set, "app.example.com", "/public/logo.png"),
        public("corp", 0)
    );
}

#[test]
fn whitelist_rule_requires_login_when_no_condition_matches() {
    let set = rules(&[whitelist("corp", &["{ path: /public }"])]);
    assert_eq!(decide(&set, "app.example.com", "/private"), login("corp"));
    assert_eq!(decide(&set, "app.example.com", "/"), login("corp"));
}

#[test]
fn whitelist_rule_without_conditions_requires_login_everywhere() {
    let set = rules(&[whitelist("corp", &[])]);
    assert_eq!(decide(&set, "app.example.com", "/public"), login("corp"));
    assert_eq!(decide(&set, "elsewhere.net", "/"), login("corp"));
}

#[test]
fn blacklist_rule_requires_login_for_matching_prefix() {
    let set = rules(&[blacklist("corp", &["{ path: /admin }"])]);
    assert_eq!(
        decide(&set, "app.example.com", "/admin/users"),
        login_by("corp", 0)
    );
}

#[test]
fn blacklist_rule_passes_unmatched_request_to_default_action() {
    let set = rules(&[blacklist("corp", &["{ path: /admin }"])]);
    assert_eq!(decide(&set, "app.example.com", "/home"), ALLOW);

    let set = rules_with_default("deny", &[blacklist("corp", &["{ path: /admin }"])]);
    assert_eq!(decide(&set, "app.example.com", "/home"), DENY);
    assert_eq!(decide(&set, "app.example.com", "/admin"), login_by("corp", 0));
}

#[test]
fn blacklist_reports_the_first_matching_condition() {
    let set = rules(&[blacklist(
        "corp",
        &["{ path: /ops }", "{ path: /admin/ }", "{ path: /admin }"],
    )]);
    assert_eq!(decide(&set, "app.example.com", "/admin/x"), login_by("corp", 1));
    assert_eq!(
        decide(&set, "app.example.com", "/administrator"),
        login_by("corp", 2)
    );
}

#[test]
fn whitelist_reports_the_first_matching_condition() {
    let set = rules(&[whitelist("corp", &["{ path: /static/css }", "{ path: /static }"])]);
    assert_eq!(
        decide(&set, "app.example.com", "/static/css/a.css"),
        public("corp", 0)
    );
    assert_eq!(
        decide(&set, "app.example.com", "/static/js/a.js"),
        public("corp", 1)
    );
}

#[test]
fn condition_without_path_matches_every_path_of_its_domain() {
    let set = rules(&[blacklist("corp", &["{ domain: admin.example.com }"])]);
    assert_eq!(
        decide(&set, "admin.example.com", "/anything"),
        login_by("corp", 0)
    );
    assert_eq!(decide(&set, "app.example.com", "/anything"), ALLOW);
}

// ---- match types ----

#[test]
fn exact_match_is_the_whole_path() {
    let set = rules(&[whitelist("corp", &["{ path: /healthz, match: exact }"])]);
    assert_eq!(decide(&set, "app.example.com", "/healthz"), public("corp", 0));
    assert_eq!(
        decide(&set, "app.example.com", "/healthz?verbose=1"),
        public("corp", 0)
    );
    for path in ["/healthz/", "/healthz/x", "/healthzz", "/health", "/x/healthz"] {
        assert_eq!(decide(&set, "app.example.com", path), login("corp"), "{path}");
    }
}

#[test]
fn prefix_match_is_a_plain_string_prefix() {
    let set = rules(&[whitelist("corp", &["{ path: /public, match: prefix }"])]);
    for path in ["/public", "/public/", "/public/a/b", "/publicity"] {
        assert_eq!(decide(&set, "app.example.com", path), public("corp", 0), "{path}");
    }
    for path in ["/pub", "/x/public", "/Public"] {
        assert_eq!(decide(&set, "app.example.com", path), login("corp"), "{path}");
    }
}

#[test]
fn prefix_is_the_default_match() {
    let set = rules(&[whitelist("corp", &["{ path: /public }"])]);
    assert_eq!(decide(&set, "app.example.com", "/publicity"), public("corp", 0));
}

#[test]
fn regex_match_must_cover_the_whole_path() {
    let set = rules(&[blacklist(
        "corp",
        &["{ path: \"/api/v[0-9]+/admin\", match: regex }"],
    )]);
    assert_eq!(
        decide(&set, "app.example.com", "/api/v2/admin"),
        login_by("corp", 0)
    );
    for path in [
        "/api/v2/admin/x",
        "/x/api/v2/admin",
        "/api/vX/admin",
        "/api/v2/adminx",
    ] {
        assert_eq!(decide(&set, "app.example.com", path), ALLOW, "{path}");
    }
}

#[test]
fn regex_alternation_is_anchored_as_a_whole() {
    let set = rules(&[whitelist("corp", &["{ path: \"/a|/b\", match: regex }"])]);
    assert_eq!(decide(&set, "app.example.com", "/a"), public("corp", 0));
    assert_eq!(decide(&set, "app.example.com", "/b"), public("corp", 0));
    assert_eq!(decide(&set, "app.example.com", "/a/x"), login("corp"));
    assert_eq!(decide(&set, "app.example.com", "/x/b"), login("corp"));
}

// ---- condition domains ----

#[test]
fn exact_condition_domain_matches_only_that_host() {
    let set = rules(&[whitelist("corp", &["{ domain: www.example.com, path: / }"])]);
    assert_eq!(decide(&set, "www.example.com", "/"), public("corp", 0));
    for host in [
        "example.com",
        "a.www.example.com",
        "app.example.com",
        "www.example.com.evil.net",
    ] {
        assert_eq!(decide(&set, host, "/"), login("corp"), "{host}");
    }
}

#[test]
fn wildcard_condition_domain_matches_subdomains_at_any_depth_but_not_the_apex() {
    let set = rules(&[whitelist("corp", &["{ domain: \"*.example.com\", path: /pub }"])]);
    for host in ["a.example.com", "a.b.example.com", "x.y.z.example.com"] {
        assert_eq!(decide(&set, host, "/pub"), public("corp", 0), "{host}");
    }
    for host in ["example.com", "badexample.com", "example.com.evil.net"] {
        assert_eq!(decide(&set, host, "/pub"), login("corp"), "{host}");
    }
}

#[test]
fn star_and_omitted_condition_domains_match_every_host() {
    let set = rules(&[whitelist(
        "corp",
        &["{ domain: \"*\", path: /star }", "{ path: /none }"],
    )]);
    for host in ["example.com", "a.example.com", "elsewhere.net", "localhost"] {
        assert_eq!(decide(&set, host, "/star"), public("corp", 0), "{host}");
        assert_eq!(decide(&set, host, "/none"), public("corp", 1), "{host}");
    }
}

// ---- rule domains ----

#[test]
fn rule_is_skipped_for_hosts_outside_its_domains() {
    let set = rules(&[rule_with(
        "corp",
        "whitelist",
        &[],
        "domains: [\"*.example.com\"]",
    )]);
    assert_eq!(decide(&set, "app.example.com", "/"), login("corp"));
    assert_eq!(decide(&set, "elsewhere.net", "/"), ALLOW);
    assert_eq!(decide(&set, "example.com", "/"), ALLOW);
}

#[test]
fn rule_domains_accept_exact_wildcard_and_star() {
    let set = rules(&[
        rule_with("shop", "whitelist", &[], "domains: [shop.example.org]"),
        rule_with("corp", "whitelist", &[], "domains: [\"*.example.com\"]"),
        rule_with("rest", "whitelist", &[], "domains: [\"*\"]"),
    ]);
    assert_eq!(decide(&set, "shop.example.org", "/"), login("shop"));
    assert_eq!(decide(&set, "a.b.example.com", "/"), login("corp"));
    assert_eq!(decide(&set, "elsewhere.net", "/"), login("rest"));
}

#[test]
fn rule_without_domains_governs_every_host() {
    let set = rules(&[whitelist("corp", &[])]);
    for host in ["app.example.com", "elsewhere.net", "10.0.0.1", "[::1]"] {
        assert_eq!(decide(&set, host, "/"), login("corp"), "{host}");
    }
}

// ---- rule order ----

#[test]
fn first_deciding_rule_wins() {
    let set = rules(&[
        whitelist("strict", &["{ path: /docs }"]),
        whitelist("lenient", &["{ path: / }"]),
    ]);
    assert_eq!(decide(&set, "app.example.com", "/docs"), public("strict", 0));
    assert_eq!(decide(&set, "app.example.com", "/admin"), login("strict"));
}

#[test]
fn blacklist_non_match_falls_through_to_the_next_rule() {
    let set = rules(&[
        blacklist("admin", &["{ path: /admin }"]),
        whitelist("corp", &["{ path: /public }"]),
    ]);
    assert_eq!(decide(&set, "app.example.com", "/admin"), login_by("admin", 0));
    assert_eq!(decide(&set, "app.example.com", "/public"), public("corp", 0));
    assert_eq!(decide(&set, "app.example.com", "/other"), login("corp"));
}

#[test]
fn rule_outside_its_domains_falls_through_to_the_next_rule() {
    let set = rules(&[
        rule_with(
            "shop",
            "whitelist",
            &["{ path: /cart }"],
            "domains: [shop.example.org]",
        ),
        blacklist("corp", &["{ path: /admin }"]),
    ]);
    assert_eq!(decide(&set, "shop.example.org", "/admin"), login("shop"));
    assert_eq!(decide(&set, "app.example.com", "/admin"), login_by("corp", 0));
    assert_eq!(decide(&set, "app.example.com", "/cart"), ALLOW);
}

#[test]
fn disabled_rules_are_ignored() {
    let set = rules(&[
        rule_with("off-first", "whitelist", &[], "enabled: false"),
        blacklist("corp", &["{ path: /admin }"]),
    ]);
    assert_eq!(decide(&set, "app.example.com", "/home"), ALLOW);
    assert_eq!(decide(&set, "app.example.com", "/admin"), login_by("corp", 0));

    let set = rules_with_default(
        "deny",
        &[rule_with(
            "only",
            "whitelist",
            &["{ path: /public }"],
            "enabled: false",
        )],
    );
    assert_eq!(decide(&set, "app.example.com", "/public"), DENY);
}

#[test]
fn default_action_applies_when_no_rule_decides() {
    assert_eq!(decide(&rules(&[]), "app.example.com", "/"), ALLOW);
    assert_eq!(
        decide(&rules_with_default("deny", &[]), "app.example.com", "/"),
        DENY
    );
    assert_eq!(
        decide(&RuleSet::empty(DefaultAction::Deny), "app.example.com", "/"),
        DENY
    );
}

// ---- callback ----

#[test]
fn callback_path_on_the_redirect_host_completes_the_login() {
    let set = rules(&[whitelist("corp", &["{ path: / }"])]);
    assert_eq!(
        decide(&set, "app.example.com", "/oauth2/callback?code=c&state=s"),
        callback("corp")
    );
    assert_eq!(
        decide(&set, "APP.example.com:443", "/oauth2/callback"),
        callback("corp")
    );
}

#[test]
fn callback_comes_before_rules_and_their_domains() {
    let set = rules(&[
        blacklist("first", &["{ path: /oauth2 }"]),
        rule_with(
            "corp",
            "whitelist",
            &[],
            "
            redirect_url: https://login.example.com/oauth2/callback
            domains: [app.example.com]
            ",
        ),
    ]);
    assert_eq!(
        decide(&set, "login.example.com", "/oauth2/callback"),
        callback("corp")
    );
}

#[test]
fn callback_path_on_another_host_is_an_ordinary_path() {
    let set = rules(&[whitelist("corp", &["{ path: /public }"])]);
    assert_eq!(decide(&set, "www.example.com", "/oauth2/callback"), login("corp"));
}

#[test]
fn other_paths_on_the_redirect_host_are_not_the_callback() {
    let set = rules(&[whitelist("corp", &["{ path: /public }"])]);
    for path in [
        "/oauth2/start",
        "/oauth2/callbackx",
        "/oauth2/callback/",
        "/",
        "/oauth2",
    ] {
        assert_eq!(decide(&set, "app.example.com", path), login("corp"), "{path}");
    }
}

#[test]
fn disabled_rule_redirect_url_is_not_a_callback() {
    let set = rules(&[rule_with("corp", "whitelist", &[], "enabled: false")]);
    assert_eq!(decide(&set, "app.example.com", "/oauth2/callback"), ALLOW);
}

// ---- normalisation ----

#[test]
fn encoded_letter_cannot_bypass_a_blacklist() {
    let set = rules(&[blacklist("corp", &["{ path: /admin, match: exact }"])]);
    assert_eq!(decide(&set, "app.example.com", "/%61dmin"), login_by("corp", 0));
    assert_eq!(
        decide(&set, "app.example.com", "/%61%64%6d%69%6e"),
        login_by("corp", 0)
    );
}

#[test]
fn repeated_slashes_cannot_bypass_a_blacklist() {
    let set = rules(&[blacklist("corp", &["{ path: /admin/users, match: exact }"])]);
    for path in ["//admin/users", "/admin//users", "///admin///users"] {
        assert_eq!(
            decide(&set, "app.example.com", path),
            login_by("corp", 0),
            "{path}"
        );
    }
}

#[test]
fn dot_segments_cannot_bypass_a_blacklist() {
    let set = rules(&[blacklist("corp", &["{ path: /admin }"])]);
    for path in ["/x/../admin", "/./admin", "/x/%2e%2e/admin", "/../admin"] {
        assert_eq!(
            decide(&set, "app.example.com", path),
            login_by("corp", 0),
            "{path}"
        );
    }
}

#[test]
fn dot_segments_cannot_climb_out_of_a_public_prefix() {
    let set = rules(&[whitelist("corp", &["{ path: /public/ }"])]);
    for path in ["/public/../admin", "/public/%2e%2e/admin", "/public/./../admin"] {
        assert_eq!(decide(&set, "app.example.com", path), login("corp"), "{path}");
    }
    assert_eq!(
        decide(&set, "app.example.com", "/public/x/../y"),
        public("corp", 0)
    );
}

#[test]
fn paths_are_case_sensitive() {
    let set = rules(&[blacklist("corp", &["{ path: /admin, match: exact }"])]);
    assert_eq!(decide(&set, "app.example.com", "/ADMIN"), ALLOW);
    assert_eq!(decide(&set, "app.example.com", "/%41dmin"), ALLOW);
    assert_eq!(decide(&set, "app.example.com", "/admin"), login_by("corp", 0));
}

#[test]
fn host_case_and_port_cannot_bypass_a_condition_domain() {
    let set = rules(&[blacklist(
        "corp",
        &[
            "{ domain: admin.example.com }",
            "{ domain: a.example.com, path: /x }",
        ],
    )]);
    for authority in [
        "ADMIN.example.com",
        "Admin.Example.COM:8443",
        "admin.example.com.",
    ] {
        assert_eq!(decide(&set, authority, "/"), login_by("corp", 0), "{authority}");
    }
    assert_eq!(decide(&set, "a.example.com:8443", "/x"), login_by("corp", 1));
}

#[test]
fn host_case_and_port_cannot_bypass_rule_domains() {
    let set = rules(&[rule_with("corp", "whitelist", &[], "domains: [app.example.com]")]);
    assert_eq!(decide(&set, "APP.EXAMPLE.COM:8443", "/"), login("corp"));
}

#[test]
fn encoded_slash_is_never_public_through_a_whitelist() {
    let set = rules(&[whitelist(
        "corp",
        &["{ path: /public }", "{ domain: static.example.com }"],
    )]);
    for path in [
        "/public%2F..%2Fadmin",
        "/public/a%2Fb",
        "/public/a%2fb",
        "/public/a%5Cb",
        "/public/a\\b",
    ] {
        assert_eq!(decide(&set, "app.example.com", path), login("corp"), "{path}");
        assert_eq!(decide(&set, "static.example.com", path), login("corp"), "{path}");
    }
    assert_eq!(decide(&set, "app.example.com", "/public/ab"), public("corp", 0));
}

#[test]
fn encoded_slash_in_the_query_does_not_change_the_decision() {
    let set = rules(&[whitelist("corp", &["{ path: /public }"])]);
    assert_eq!(
        decide(&set, "app.example.com", "/public/search?q=a%2Fb"),
        public("corp", 0)
    );
}

#[test]
fn blacklist_sees_encoded_separators_decoded() {
    let set = rules(&[blacklist("corp", &["{ path: /admin }"])]);
    for path in [
        "/x%2F..%2Fadmin",
        "/x%2f..%2fadmin",
        "/x%5C..%5Cadmin",
        "/x\\..\\admin",
        "/%2Fadmin",
        "/admin%2Fsecrets",
    ] {
        assert_eq!(
            decide(&set, "app.example.com", path),
            login_by("corp", 0),
            "{path}"
        );
    }
    assert_eq!(decide(&set, "app.example.com", "/other%2Fpath"), ALLOW);
}

#[test]
fn blacklist_regex_sees_encoded_separators_decoded() {
    let set = rules(&[blacklist("corp", &["{ path: \"/admin/.*\", match: regex }"])]);
    assert_eq!(
        decide(&set, "app.example.com", "/admin%2Fusers"),
        login_by("corp", 0)
    );
}

// ---- explain ----

fn explain_at(set: &RuleSet, authority: &str, raw_path: &str) -> Explanation {
    let host = normalize_host(authority);
    route(set, &host, &RequestPath::parse(raw_path)).explain()
}

#[test]
fn explain_public_request_names_rule_and_condition() {
    let set = rules(&[whitelist("corp", &["{ path: /x }", "{ path: /public }"])]);
    let e = explain_at(&set, "app.example.com", "/public/a");
    assert_eq!(e.action, "allow");
    assert_eq!(e.rule.as_deref(), Some("corp"));
    assert_eq!(e.condition, Some(1));
    assert!(e.reason.contains("corp"), "{}", e.reason);
}

#[test]
fn explain_whitelist_login_has_no_condition() {
    let set = rules(&[whitelist("corp", &["{ path: /public }"])]);
    let e = explain_at(&set, "app.example.com", "/private");
    assert_eq!(e.action, "login");
    assert_eq!(e.rule.as_deref(), Some("corp"));
    assert_eq!(e.condition, None);
    assert!(!e.reason.is_empty());
}

#[test]
fn explain_blacklist_login_names_the_condition() {
    let set = rules(&[blacklist("corp", &["{ path: /ops }", "{ path: /admin }"])]);
    let e = explain_at(&set, "app.example.com", "/admin");
    assert_eq!(e.action, "login");
    assert_eq!(e.rule.as_deref(), Some("corp"));
    assert_eq!(e.condition, Some(1));
    assert!(e.reason.contains("/admin"), "{}", e.reason);
}

#[test]
fn explain_default_action_names_no_rule() {
    let e = explain_at(&rules(&[]), "app.example.com", "/");
    assert_eq!((e.action, e.rule, e.condition), ("allow", None, None));
    assert!(!e.reason.is_empty());

    let e = explain_at(&rules_with_default("deny", &[]), "app.example.com", "/");
    assert_eq!((e.action, e.rule, e.condition), ("deny", None, None));
    assert!(e.reason.contains("deny"), "{}", e.reason);
}

#[test]
fn explain_callback_is_a_login_by_its_rule() {
    let set = rules(&[whitelist("corp", &[])]);
    let e = explain_at(&set, "app.example.com", "/oauth2/callback");
    assert_eq!(e.action, "login");
    assert_eq!(e.rule.as_deref(), Some("corp"));
    assert_eq!(e.condition, None);
    assert!(!e.reason.is_empty());
}

#[test]
fn explanation_json_has_action_rule_condition_and_reason() {
    let set = rules(&[whitelist("corp", &["{ path: /public }"])]);
    let value = serde_json::to_value(explain_at(&set, "app.example.com", "/public")).expect("json");
    let object = value.as_object().expect("an object");
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, vec!["action", "condition", "reason", "rule"]);
    assert_eq!(value["action"], json!("allow"));
    assert_eq!(value["rule"], json!("corp"));
    assert_eq!(value["condition"], json!(0));
    assert!(value["reason"].as_str().is_some_and(|r| !r.is_empty()));

    let value = serde_json::to_value(explain_at(&rules_with_default("deny", &[]), "h", "/")).expect("json");
    assert_eq!(value["action"], json!("deny"));
    assert_eq!(value["rule"], json!(null));
    assert_eq!(value["condition"], json!(null));
}

#[test]
fn explain_url_normalizes_host_and_path() {
    let set = rules(&[blacklist(
        "corp",
        &["{ domain: admin.example.com, path: /admin }"],
    )]);
    for url in [
        "https://ADMIN.example.com:8443/%61dmin?x=1",
        "https://admin.example.com//admin",
        "https://admin.example.com/x/../admin",
        "https://admin.example.com/x%2F..%2Fadmin",
    ] {
        let e = explain_url(&set, url).unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(e.action, "login", "{url}");
        assert_eq!(e.condition, Some(0), "{url}");
    }
    let e = explain_url(&set, "https://admin.example.com/ADMIN").expect("explained");
    assert_eq!(e.action, "allow");
}

#[test]
fn explain_url_never_shows_an_encoded_slash_as_public() {
    let set = rules(&[whitelist("corp", &["{ path: /public }"])]);
    let e = explain_url(&set, "https://app.example.com/public%2F..%2Fadmin").expect("explained");
    assert_eq!(e.action, "login");
    let e = explain_url(&set, "https://app.example.com/public/a?b=%2F").expect("explained");
    assert_eq!(e.action, "allow");
}

#[test]
fn explain_url_refuses_what_is_not_an_absolute_url_with_a_host() {
    let set = rules(&[]);
    for url in ["/relative/path", "not a url", "mailto:someone@example.com", ""] {
        assert!(explain_url(&set, url).is_err(), "{url:?}");
    }
}

#[test]
fn blacklist_path_with_non_ascii_or_space_cannot_be_bypassed_by_percent_encoding() {
    // Browsers send `/café` as `/caf%C3%A9` and the backend decodes it back: a condition written
    // `/café` must catch the encoded form, or be refused when the rules are loaded. It must
    // never leave the path silently unprotected.
    for (written, sent) in [
        ("/café", "/caf%C3%A9"),
        ("/café", "/caf%c3%a9"),
        ("/docs/a b", "/docs/a%20b"),
    ] {
        let text = format!(
            "session:\n  secrets: [\"0123456789abcdef0123456789abcdef\"]\nrules:\n{}",
            blacklist("corp", &[&format!("{{ path: \"{written}\", match: prefix }}")])
        );
        match crate::rule_source::parse_config(&text, "decision.yaml", Path::new("/etc"), &|_| None)
            .map(|(config, _)| config)
        {
            Err(ConfigErrors(errors)) => assert!(
                errors
                    .iter()
                    .any(|e| e.field == "authorization.conditions[0].path"),
                "{written}: {errors:?}"
            ),
            Ok(config) => {
                let set = RuleSet::compile(&config.rules, config.default_action).expect("rules compile");
                assert_eq!(
                    decide(&set, "app.example.com", sent),
                    login_by("corp", 0),
                    "blacklist {written:?} bypassed by {sent:?}"
                );
            }
        }
    }
}

// ---- paths a backend reads in more than one way (segment parameters, double encoding) ----

#[test]
fn segment_parameters_and_double_encoding_are_never_public_through_a_whitelist() {
    let set = rules(&[whitelist("corp", &["{ path: /public }"])]);
    for path in [
        "/public/%2e%2e;/admin",
        "/public/..;/admin",
        "/public/..;x/admin",
        "/public/..%3B/admin",
        "/public;x",
        "/public/a;jsessionid=1",
        "/public/..%252fadmin",
        "/public/%252e%252e/admin",
        "/public/%25%32%65%25%32%65/admin",
        "/public/..%255cadmin",
    ] {
        assert_eq!(decide(&set, "app.example.com", path), login("corp"), "{path}");
    }
    // Ordinary escapes of other characters stay public.
    assert_eq!(
        decide(&set, "app.example.com", "/public/a%20b%3Fc"),
        public("corp", 0)
    );
}

#[test]
fn blacklist_prefix_sees_every_reading() {
    let set = rules(&[blacklist("corp", &["{ path: /admin }"])]);
    for path in [
        "/x/%2e%2e;/admin",
        "/x/..;/admin",
        "/x/..;x/admin",
        "/admin;x",
        "/;x/admin",
        "/x/..%252fadmin",
        "/x/%252e%252e/admin",
        "/x/..%3B/admin",
        "/x%252F..%252Fadmin",
        "/admin%2F..",
        "/admin/..;x",
    ] {
        assert_eq!(
            decide(&set, "app.example.com", path),
            login_by("corp", 0),
            "{path}"
        );
    }
    assert_eq!(decide(&set, "app.example.com", "/x;admin"), ALLOW);
    assert_eq!(decide(&set, "app.example.com", "/other/..%252fpath"), ALLOW);
}

#[test]
fn blacklist_exact_matches_with_parameters_and_one_trailing_slash() {
    let set = rules(&[blacklist("corp", &["{ path: /admin, match: exact }"])]);
    for path in [
        "/admin",
        "/admin/",
        "/admin;x",
        "/;x/admin",
        "/admin/;x",
        "/x/..;/admin",
    ] {
        assert_eq!(
            decide(&set, "app.example.com", path),
            login_by("corp", 0),
            "{path}"
        );
    }
    for path in ["/admin/x", "/admin//x", "/administrator"] {
        assert_eq!(decide(&set, "app.example.com", path), ALLOW, "{path}");
    }
}

#[test]
fn whitelist_exact_does_not_gain_a_trailing_slash() {
    let set = rules(&[whitelist("corp", &["{ path: /health, match: exact }"])]);
    assert_eq!(decide(&set, "app.example.com", "/health"), public("corp", 0));
    assert_eq!(decide(&set, "app.example.com", "/health/"), login("corp"));
}

#[test]
fn explain_shows_segment_parameter_tricks_as_login() {
    // The regex condition of examples/oidc-authz.yaml: static assets are public.
    let set = rules(&[whitelist(
        "corp",
        &[
            "{ path: /healthz, match: exact }",
            "{ path: \"/static/.*\\\\.(css|js)\", match: regex }",
        ],
    )]);
    let e = explain_url(&set, "https://app.example.com/static/site.css").expect("explained");
    assert_eq!(e.action, "allow");
    for url in [
        "https://app.example.com/static/..;/admin;x.js",
        "https://app.example.com/static/%2e%2e;/admin;x.js",
        "https://app.example.com/static/..%252fadmin.js",
    ] {
        let e = explain_url(&set, url).expect("explained");
        assert_eq!(e.action, "login", "{url}");
        assert!(e.reason.contains("never public"), "{url}: {}", e.reason);
    }
}

// ---- hosts ----

#[test]
fn explain_url_refuses_hosts_that_are_not_host_names() {
    let set = rules(&[blacklist(
        "corp",
        &["{ domain: admin.example.com, path: /admin }"],
    )]);
    for url in [
        "https://x@admin.example.com/admin",
        "https://admin.example.com../admin",
        "https://admin.example.com:443:1/admin",
        "https://admin%2eexample.com/admin",
    ] {
        let e = explain_url(&set, url).expect("explained");
        assert_eq!(e.action, "deny", "{url}");
        assert!(e.reason.contains("400"), "{url}: {}", e.reason);
    }
    let e = explain_url(&set, "https://admin.example.com./admin").expect("explained");
    assert_eq!(e.action, "login");
}

#[test]
fn default_allow_with_only_scoped_rules_is_reported() {
    let scoped = rule_with(
        "corp",
        "whitelist",
        &[],
        "domains: [admin.example.com, \"*.corp.example.com\"]\n",
    );
    let warning = unprotected_hosts(&rules(std::slice::from_ref(&scoped))).expect("a warning");
    assert!(warning.contains("admin.example.com"), "{warning}");
    assert!(warning.contains("*.corp.example.com"), "{warning}");
    assert_eq!(
        unprotected_hosts(&rules_with_default("deny", std::slice::from_ref(&scoped))),
        None
    );
    let everywhere = whitelist("all", &[]);
    assert_eq!(unprotected_hosts(&rules(&[scoped, everywhere])), None);
    let star = rule_with("star", "blacklist", &[], "domains: [\"*\"]\n");
    assert_eq!(unprotected_hosts(&rules(&[star])), None);
    assert!(unprotected_hosts(&rules(&[])).is_some());
}
