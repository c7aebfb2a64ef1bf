//! The cross-rule index (`rules::route_index`) against the walk it replaces: random rule sets
//! (whitelist and blacklist, some disabled, rule `domains` and condition domains from one small
//! alphabet of exact, wildcard and `*` patterns, exact, prefix and regex paths) and random
//! requests, hostile paths among them, must get the same route from `route` as from
//! `route_linear`. A difference would let a request through a rule the walk applies.

use std::sync::OnceLock;

use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;

use super::*;
use crate::config::{AuthorizationConfig, ConditionConfig, RuleConfig};

/// Random rule sets per run, each routed for several requests.
const CASES: u32 = 3_000;

/// Rule `domains` and condition domains: nested exact names and wildcards, and `*`.
const DOMAINS: &[&str] = &[
    "*",
    "x.io",
    "a.x.io",
    "b.a.x.io",
    "*.x.io",
    "*.a.x.io",
    "y.io",
    "*.y.io",
    "*.io",
    "app.example.com",
];

/// Hosts of requests: matching the patterns above in every combination, and none of them.
const HOSTS: &[&str] = &[
    "x.io",
    "a.x.io",
    "b.a.x.io",
    "c.b.a.x.io",
    "z.x.io",
    "ya.x.io",
    "y.io",
    "q.y.io",
    "io",
    "other.net",
    "app.example.com",
];

const EXACT_PATHS: &[&str] = &["/", "/a", "/a/b", "/A", "/x", "/a/", "/oauth2/callback"];
const PREFIX_PATHS: &[&str] = &["/", "/a", "/a/", "/x", "/b", "/A", "/a/b/c"];
const REGEX_PATHS: &[&str] = &["/a/.*", "/[a-z]+", "/b(/.*)?", ".*", "/A|/x", "/a/[^/]*/b"];

/// Pieces of request paths: separators, dot-segments, escapes of them, letters in both cases.
const PIECES: &[&str] = &[
    "/", "//", "a", "A", "b", "x", "c", "..", ".", "%2e%2e", "%2E", "%2f", "%2F", "%5c", "\\", ";", ";x",
    "%61", "%41", "%252f", "%252e", "?q=/a", "#f", "oauth2", "callback", "%25",
];

/// Request paths named by the issue, tried as they are.
const FIXED_PATHS: &[&str] = &[
    "/",
    "/a",
    "/a/",
    "/A",
    "//x",
    "/a/%2e%2e/b",
    "/a/b/",
    "/x/../a",
    "/b/%2fa",
    "/oauth2/callback",
    "/a;x/b",
];

#[derive(Debug, Clone)]
struct RuleSpec {
    whitelist: bool,
    enabled: bool,
    domains: Vec<&'static str>,
    /// (domain, path kind 0 = none, 1 = exact, 2 = prefix, 3 = regex, path).
    conditions: Vec<(Option<&'static str>, u8, &'static str)>,
    callback_on_x: bool,
}

fn condition() -> impl Strategy<Value = (Option<&'static str>, u8, &'static str)> {
    (
        proptest::option::weighted(0.4, proptest::sample::select(DOMAINS)),
        prop_oneof![
            1 => Just((0u8, "")),
            3 => proptest::sample::select(EXACT_PATHS).prop_map(|p| (1u8, p)),
            3 => proptest::sample::select(PREFIX_PATHS).prop_map(|p| (2u8, p)),
            2 => proptest::sample::select(REGEX_PATHS).prop_map(|p| (3u8, p)),
        ],
    )
        .prop_map(|(domain, (kind, path))| (domain, kind, path))
}

fn rule_spec() -> impl Strategy<Value = RuleSpec> {
    (
        proptest::bool::weighted(0.35),
        proptest::bool::weighted(0.85),
        proptest::collection::vec(proptest::sample::select(DOMAINS), 0..3),
        proptest::collection::vec(condition(), 0..6),
        proptest::bool::weighted(0.2),
    )
        .prop_map(
            |(whitelist, enabled, domains, conditions, callback_on_x)| RuleSpec {
                whitelist,
                enabled,
                domains,
                conditions,
                callback_on_x,
            },
        )
}

fn request_path() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(FIXED_PATHS).prop_map(str::to_string),
        proptest::collection::vec(proptest::sample::select(PIECES), 1..7)
            .prop_map(|pieces| format!("/{}", pieces.concat())),
    ]
}

/// A valid rule as the schema reads it, to copy and change.
fn base_rule() -> &'static RuleConfig {
    static BASE: OnceLock<RuleConfig> = OnceLock::new();
    BASE.get_or_init(|| {
        let text = format!(
            "session:\n  secrets: [\"0123456789abcdef0123456789abcdef\"]\nrules:\n{}",
            crate::test_yaml::rule("base", "cookie_domain: \"\"")
        );
        let config = Config::parse(&text, "index.yaml", Path::new("/etc"), &|_| None)
            .unwrap_or_else(|e| panic!("should parse:\n{e}"));
        config.rules.into_iter().next().expect("one rule")
    })
}

fn compile(specs: &[RuleSpec], default_action: DefaultAction) -> RuleSet {
    let configs: Vec<RuleConfig> = specs
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let mut config = base_rule().clone();
            config.name = format!("r{i}");
            config.enabled = spec.enabled;
            if spec.callback_on_x {
                config.redirect_url = "https://a.x.io/oauth2/callback".into();
            }
            config.domains = spec.domains.iter().map(|d| d.to_string()).collect();
            config.authorization = AuthorizationConfig {
                mode: if spec.whitelist {
                    AuthorizationMode::Whitelist
                } else {
                    AuthorizationMode::Blacklist
                },
                conditions: spec
                    .conditions
                    .iter()
                    .map(|&(domain, kind, path)| ConditionConfig {
                        domain: domain.map(str::to_string),
                        path: (kind != 0).then(|| path.to_string()),
                        path_match: match kind {
                            1 => PathMatch::Exact,
                            3 => PathMatch::Regex,
                            _ => PathMatch::Prefix,
                        },
                    })
                    .collect(),
            };
            config
        })
        .collect();
    RuleSet::compile(&configs, default_action).unwrap_or_else(|e| panic!("rules compile: {e:?}\n{specs:#?}"))
}

fn seen(route: Route<'_>) -> Seen {
    match route {
        Route::Callback(rule) => Seen::Callback(rule.name.clone()),
        Route::Public { rule, condition } => Seen::Public(rule.name.clone(), condition),
        Route::Login { rule, condition } => Seen::Login(rule.name.clone(), condition),
        Route::Default(action) => Seen::Default(action),
    }
}

fn property_config() -> ProptestConfig {
    ProptestConfig {
        cases: CASES,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(property_config())]

    /// The index decides every request as the walk does: same rule, same variant, same condition.
    #[test]
    fn index_routes_as_the_walk(
        specs in proptest::collection::vec(rule_spec(), 1..=12),
        deny in any::<bool>(),
        requests in proptest::collection::vec(
            (proptest::sample::select(HOSTS), request_path()),
            1..12,
        ),
    ) {
        let default_action = if deny { DefaultAction::Deny } else { DefaultAction::Allow };
        let set = compile(&specs, default_action);
        prop_assert!(set.route_index().is_some(), "the index should build");
        for (host, raw) in &requests {
            let path = RequestPath::parse(raw);
            let indexed = seen(route(&set, host, &path));
            let walked = seen(route_linear(&set, host, &path));
            prop_assert_eq!(indexed, walked, "host {:?} path {:?}", host, raw);
        }
    }
}

fn spec(
    whitelist: bool,
    domains: &[&'static str],
    conditions: &[(Option<&'static str>, u8, &'static str)],
) -> RuleSpec {
    RuleSpec {
        whitelist,
        enabled: true,
        domains: domains.to_vec(),
        conditions: conditions.to_vec(),
        callback_on_x: false,
    }
}

fn both(set: &RuleSet, host: &str, raw: &str) -> Seen {
    let path = RequestPath::parse(raw);
    let indexed = seen(route(set, host, &path));
    assert_eq!(indexed, seen(route_linear(set, host, &path)), "{host} {raw}");
    indexed
}

#[test]
fn a_blacklist_after_the_first_governing_whitelist_never_decides() {
    let set = compile(
        &[
            spec(true, &["a.x.io"], &[(None, 2, "/public")]),
            spec(false, &[], &[(None, 2, "/a")]),
        ],
        DefaultAction::Allow,
    );
    assert_eq!(both(&set, "a.x.io", "/a"), login("r0"));
    assert_eq!(both(&set, "b.x.io", "/a"), login_by("r1", 0));
    assert_eq!(both(&set, "b.x.io", "/b"), ALLOW);
}

#[test]
fn a_blacklist_before_a_whitelist_decides_when_it_matches() {
    let set = compile(
        &[
            spec(
                false,
                &["*.x.io"],
                &[(None, 1, "/x"), (Some("b.a.x.io"), 2, "/a")],
            ),
            spec(true, &[], &[(None, 2, "/")]),
        ],
        DefaultAction::Deny,
    );
    assert_eq!(both(&set, "b.a.x.io", "/a/b"), login_by("r0", 1));
    assert_eq!(both(&set, "c.a.x.io", "/a/b"), public("r1", 0));
    assert_eq!(both(&set, "c.a.x.io", "/x/"), login_by("r0", 0));
    assert_eq!(
        both(&set, "x.io", "/x"),
        public("r1", 0),
        "the apex is not under *.x.io"
    );
}

#[test]
fn rule_domains_and_condition_domains_are_intersected() {
    let set = compile(
        &[spec(
            false,
            &["a.x.io", "*.y.io"],
            &[(Some("*.x.io"), 2, "/a"), (Some("*.io"), 2, "/b")],
        )],
        DefaultAction::Allow,
    );
    assert_eq!(both(&set, "a.x.io", "/a"), login_by("r0", 0));
    assert_eq!(both(&set, "b.x.io", "/a"), ALLOW, "outside the rule's domains");
    assert_eq!(
        both(&set, "q.y.io", "/a"),
        ALLOW,
        "outside the condition's domain"
    );
    assert_eq!(both(&set, "q.y.io", "/b"), login_by("r0", 1));
    assert_eq!(both(&set, "y.io", "/b"), ALLOW);
}

#[test]
fn the_lowest_condition_over_every_reading_is_reported() {
    let set = compile(
        &[
            spec(false, &[], &[(None, 2, "/zzz")]),
            spec(false, &[], &[(None, 1, "/b"), (None, 2, "/a")]),
        ],
        DefaultAction::Allow,
    );
    // Canonically `/a/%2Fb`; decoded, `/a/b` and a reading climbing to `/b`.
    assert_eq!(both(&set, "x.io", "/a/..%2fb"), login_by("r1", 0));
}

#[test]
fn a_thousand_rules_decide_as_the_walk() {
    let mut specs: Vec<RuleSpec> = (0..1_000)
        .map(|_| {
            spec(
                false,
                &[],
                &[(None, 2, "/nothing"), (Some("b.a.x.io"), 3, "/[a-z]+/\\d+")],
            )
        })
        .collect();
    specs.push(spec(false, &["*.y.io"], &[(None, 1, "/a")]));
    let set = compile(&specs, DefaultAction::Deny);
    assert!(set.route_index().is_some());
    assert_eq!(both(&set, "q.y.io", "/a/"), login_by("r1000", 0));
    assert_eq!(both(&set, "b.a.x.io", "/a/42"), login_by("r0", 1));
    assert_eq!(both(&set, "x.io", "/a"), DENY);
}

#[test]
fn a_set_without_its_index_walks_the_rules() {
    let set = compile(
        &[
            spec(true, &["a.x.io"], &[(None, 2, "/public")]),
            spec(false, &[], &[(None, 2, "/a")]),
        ],
        DefaultAction::Allow,
    )
    .without_index();
    assert!(set.route_index().is_none());
    assert_eq!(both(&set, "a.x.io", "/public/a"), public("r0", 0));
    assert_eq!(both(&set, "b.x.io", "/a"), login_by("r1", 0));
}
