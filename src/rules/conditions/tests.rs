//! Unit tests of the condition index: every match kind and domain form, lowest index wins, hostile input.

use super::*;
use crate::rules::normalize::{normalize_host, RequestPath};
use serde::Deserialize;

fn cond<'a>(domain: Option<&'a str>, path: Option<&'a str>, path_match: PathMatch) -> ConditionSpec<'a> {
    ConditionSpec {
        domain,
        path,
        path_match,
    }
}

fn compile(specs: &[ConditionSpec<'_>]) -> ConditionIndex {
    match ConditionIndex::compile(specs) {
        Ok(index) => index,
        Err(errors) => panic!("conditions should compile: {errors:?}"),
    }
}

fn errors(specs: &[ConditionSpec<'_>]) -> Vec<(usize, &'static str)> {
    match ConditionIndex::compile(specs) {
        Ok(_) => panic!("conditions should be rejected"),
        Err(errors) => errors.iter().map(|e| (e.index, e.field)).collect(),
    }
}

/// What the rule engine does: normalize, then match the canonical path.
fn decide(index: &ConditionIndex, authority: &str, raw_path: &str) -> Option<usize> {
    index.first_match(
        &normalize_host(authority),
        RequestPath::parse(raw_path).canonical(),
    )
}

#[test]
fn exact_path_matches_only_equal_path() {
    let index = compile(&[cond(None, Some("/admin"), PathMatch::Exact)]);
    assert_eq!(index.first_match("a.com", "/admin"), Some(0));
    assert_eq!(index.first_match("a.com", "/admin/"), None);
    assert_eq!(index.first_match("a.com", "/admin/x"), None);
    assert_eq!(index.first_match("a.com", "/"), None);
}

#[test]
fn prefix_is_a_plain_string_prefix_like_envoy() {
    let index = compile(&[cond(None, Some("/public"), PathMatch::Prefix)]);
    assert_eq!(index.first_match("a.com", "/public"), Some(0));
    assert_eq!(index.first_match("a.com", "/public/x"), Some(0));
    assert_eq!(index.first_match("a.com", "/publicity"), Some(0));
    assert_eq!(index.first_match("a.com", "/pub"), None);
    assert_eq!(index.first_match("a.com", "/x/public"), None);
}

#[test]
fn root_prefix_matches_every_path() {
    let index = compile(&[cond(None, Some("/"), PathMatch::Prefix)]);
    assert_eq!(index.first_match("a.com", "/"), Some(0));
    assert_eq!(index.first_match("a.com", "/anything/at/all"), Some(0));
}

#[test]
fn match_defaults_to_prefix() {
    assert_eq!(PathMatch::default(), PathMatch::Prefix);
    let index = compile(&[ConditionSpec {
        path: Some("/p"),
        ..Default::default()
    }]);
    assert_eq!(index.first_match("a.com", "/p/q"), Some(0));
}

#[test]
fn regex_must_match_the_whole_path() {
    let index = compile(&[cond(None, Some("/api/v[0-9]+/users"), PathMatch::Regex)]);
    assert_eq!(index.first_match("a.com", "/api/v2/users"), Some(0));
    assert_eq!(index.first_match("a.com", "/api/v2/users/7"), None);
    assert_eq!(index.first_match("a.com", "/x/api/v2/users"), None);
}

#[test]
fn regex_alternation_is_anchored_as_a_whole() {
    let index = compile(&[cond(None, Some("/a|/b"), PathMatch::Regex)]);
    assert_eq!(index.first_match("h", "/a"), Some(0));
    assert_eq!(index.first_match("h", "/b"), Some(0));
    assert_eq!(index.first_match("h", "/a/x"), None);
    assert_eq!(index.first_match("h", "/x/b"), None);
}

#[test]
fn regex_cannot_escape_whole_path_anchoring() {
    assert_eq!(
        errors(&[cond(None, Some("/a)|(/b"), PathMatch::Regex)]),
        vec![(0, "path")]
    );
    assert_eq!(
        errors(&[cond(None, Some("/a)|(?:/b"), PathMatch::Regex)]),
        vec![(0, "path")]
    );
}

#[test]
fn multiline_flag_in_regex_cannot_match_part_of_a_path() {
    let index = compile(&[cond(None, Some("(?m)/x"), PathMatch::Regex)]);
    assert_eq!(index.first_match("h", "/x\n/y"), None);
    assert_eq!(index.first_match("h", "/x"), Some(0));
}

#[test]
fn omitted_path_matches_every_path() {
    let index = compile(&[cond(Some("a.example.com"), None, PathMatch::Regex)]);
    assert_eq!(index.first_match("a.example.com", "/"), Some(0));
    assert_eq!(index.first_match("a.example.com", "/x/y"), Some(0));
    assert_eq!(index.first_match("b.example.com", "/x/y"), None);
}

#[test]
fn exact_domain_matches_only_that_host() {
    let index = compile(&[cond(Some("a.example.com"), Some("/"), PathMatch::Prefix)]);
    assert_eq!(index.first_match("a.example.com", "/x"), Some(0));
    assert_eq!(index.first_match("b.a.example.com", "/x"), None);
    assert_eq!(index.first_match("example.com", "/x"), None);
}

#[test]
fn wildcard_domain_matches_subdomains_at_any_depth_but_not_apex() {
    let index = compile(&[cond(Some("*.example.com"), Some("/p"), PathMatch::Exact)]);
    assert_eq!(index.first_match("a.example.com", "/p"), Some(0));
    assert_eq!(index.first_match("a.b.c.example.com", "/p"), Some(0));
    assert_eq!(index.first_match("example.com", "/p"), None);
    assert_eq!(index.first_match("badexample.com", "/p"), None);
    assert_eq!(index.first_match("a.example.com.evil.net", "/p"), None);
    assert_eq!(index.first_match("a.example.com", "/q"), None);
}

#[test]
fn star_and_omitted_domain_match_every_host() {
    let index = compile(&[
        cond(Some("*"), Some("/star"), PathMatch::Exact),
        cond(None, Some("/none"), PathMatch::Exact),
    ]);
    for host in ["a.com", "x.y.z", "", "[::1]"] {
        assert_eq!(index.first_match(host, "/star"), Some(0));
        assert_eq!(index.first_match(host, "/none"), Some(1));
    }
}

#[test]
fn condition_needs_both_domain_and_path_to_match() {
    let index = compile(&[cond(Some("a.com"), Some("/x"), PathMatch::Exact)]);
    assert_eq!(index.first_match("a.com", "/x"), Some(0));
    assert_eq!(index.first_match("b.com", "/x"), None);
    assert_eq!(index.first_match("a.com", "/y"), None);
}

#[test]
fn lowest_index_wins_across_buckets_and_kinds() {
    let index = compile(&[
        cond(None, Some("/z"), PathMatch::Exact),
        cond(Some("*.example.com"), Some("/a.*"), PathMatch::Regex),
        cond(Some("a.example.com"), Some("/a/b"), PathMatch::Prefix),
        cond(None, Some("/a"), PathMatch::Prefix),
        cond(Some("a.example.com"), None, PathMatch::Prefix),
        cond(Some("*.a.example.com"), Some("/a/b/c"), PathMatch::Exact),
    ]);
    assert_eq!(index.first_match("a.example.com", "/a/b/c"), Some(1));
    assert_eq!(index.first_match("x.a.example.com", "/a/b/c"), Some(1));
    assert_eq!(index.first_match("a.example.com", "/z"), Some(0));
    assert_eq!(index.first_match("a.example.com", "/q"), Some(4));
    assert_eq!(index.first_match("other.com", "/a/b/c"), Some(3));
    assert_eq!(index.first_match("other.com", "/q"), None);
}

#[test]
fn lowest_index_wins_within_a_bucket() {
    let index = compile(&[
        cond(None, Some("/a/b"), PathMatch::Prefix),
        cond(None, Some("/a"), PathMatch::Prefix),
        cond(None, Some("/a/b/c"), PathMatch::Exact),
        cond(None, Some("/a/b/c"), PathMatch::Exact),
        cond(None, Some("/.*"), PathMatch::Regex),
        cond(None, Some("/a.*"), PathMatch::Regex),
        cond(None, None, PathMatch::Prefix),
    ]);
    assert_eq!(index.first_match("h", "/a/b/c"), Some(0));
    assert_eq!(index.first_match("h", "/a/x"), Some(1));
    assert_eq!(index.first_match("h", "/q"), Some(4));
    assert_eq!(index.first_match("h", "q"), Some(6));
}

#[test]
fn later_regex_reports_its_own_index() {
    let index = compile(&[
        cond(None, Some("/one"), PathMatch::Regex),
        cond(None, Some("/two"), PathMatch::Regex),
        cond(None, Some("/t.*"), PathMatch::Regex),
    ]);
    assert_eq!(index.first_match("h", "/two"), Some(1));
    assert_eq!(index.first_match("h", "/three"), Some(2));
    assert_eq!(index.first_match("h", "/four"), None);
}

#[test]
fn encoded_letter_cannot_bypass_exact_match() {
    let index = compile(&[cond(None, Some("/admin"), PathMatch::Exact)]);
    assert_eq!(decide(&index, "a.com", "/%61dmin"), Some(0));
    assert_eq!(decide(&index, "a.com", "/%61%64%6D%69%6E"), Some(0));
}

#[test]
fn doubled_slash_cannot_bypass_prefix_match() {
    let index = compile(&[cond(None, Some("/admin"), PathMatch::Prefix)]);
    assert_eq!(decide(&index, "a.com", "//admin"), Some(0));
    assert_eq!(decide(&index, "a.com", "///admin//x"), Some(0));
}

#[test]
fn dot_segments_cannot_bypass_prefix_match() {
    let index = compile(&[cond(None, Some("/admin"), PathMatch::Prefix)]);
    assert_eq!(decide(&index, "a.com", "/x/../admin"), Some(0));
    assert_eq!(decide(&index, "a.com", "/%2e%2e/admin"), Some(0));
    assert_eq!(decide(&index, "a.com", "/public/%2E%2E/admin?x=1"), Some(0));
}

#[test]
fn uppercase_host_and_port_cannot_bypass_domain_match() {
    let index = compile(&[cond(Some("admin.example.com"), None, PathMatch::Prefix)]);
    assert_eq!(decide(&index, "ADMIN.example.com", "/"), Some(0));
    assert_eq!(decide(&index, "Admin.Example.Com:8443", "/"), Some(0));
    assert_eq!(decide(&index, "admin.example.com.", "/"), Some(0));
}

#[test]
fn dot_segments_cannot_climb_out_of_a_public_prefix() {
    let index = compile(&[cond(None, Some("/public/"), PathMatch::Prefix)]);
    assert_eq!(decide(&index, "a.com", "/public/../admin"), None);
    assert_eq!(decide(&index, "a.com", "/public/%2e%2e/admin"), None);
    assert_eq!(decide(&index, "a.com", "/public/x/../y"), Some(0));
}

#[test]
fn blacklist_sees_encoded_slash_traversal_decoded() {
    let index = compile(&[cond(None, Some("/admin"), PathMatch::Prefix)]);
    for raw in [
        "/x%2F..%2Fadmin",
        "/x%2f..%2fadmin",
        "/x%5C..%5Cadmin",
        "/x\\..\\admin",
    ] {
        let path = RequestPath::parse(raw);
        assert!(path.is_ambiguous(), "{raw}");
        assert_eq!(index.first_match("a.com", path.canonical()), None, "{raw}");
        assert_eq!(index.first_match("a.com", path.decoded()), Some(0), "{raw}");
    }
}

#[test]
fn every_bad_condition_is_reported_with_index_and_field() {
    let found = errors(&[
        cond(Some("a.*.com"), Some("/ok"), PathMatch::Prefix),
        cond(Some("ok.com"), Some("/ok"), PathMatch::Prefix),
        cond(None, Some("no-slash"), PathMatch::Prefix),
        cond(None, Some("relative"), PathMatch::Exact),
        cond(None, Some("(unclosed"), PathMatch::Regex),
        cond(Some("a.com:443"), Some("bad"), PathMatch::Exact),
        cond(Some(""), None, PathMatch::Prefix),
        cond(Some("*."), None, PathMatch::Prefix),
    ]);
    assert_eq!(
        found,
        vec![
            (0, "domain"),
            (2, "path"),
            (3, "path"),
            (4, "path"),
            (5, "domain"),
            (5, "path"),
            (6, "domain"),
            (7, "domain"),
        ]
    );
}

#[test]
fn regex_error_carries_the_regex_message() {
    let result = ConditionIndex::compile(&[cond(None, Some("(unclosed"), PathMatch::Regex)]);
    let Err(errors) = result else {
        panic!("should be rejected")
    };
    assert_eq!(errors.len(), 1);
    assert!(errors[0].message.contains("unclosed"), "{}", errors[0].message);
    assert_eq!(
        errors[0].to_string().split(':').next(),
        Some("condition 0 (path)")
    );
}

#[test]
fn oversized_regex_is_rejected_instead_of_exhausting_memory() {
    let found = errors(&[cond(None, Some("/(?:[a-z]{100}){1000}"), PathMatch::Regex)]);
    assert_eq!(found, vec![(0, "path")]);
    let found = errors(&[cond(None, Some("/\\w{1000}\\w{1000}"), PathMatch::Regex)]);
    assert_eq!(found, vec![(0, "path")]);
}

#[test]
fn non_canonical_config_path_is_rejected() {
    for path in ["//admin", "/a/../admin", "/%61dmin", "/a%2fb", "/a?x", "/a#f"] {
        assert_eq!(
            errors(&[cond(None, Some(path), PathMatch::Exact)]),
            vec![(0, "path")],
            "{path}"
        );
    }
    for path in ["/a/./", "//a", "/x/../"] {
        assert_eq!(
            errors(&[cond(None, Some(path), PathMatch::Prefix)]),
            vec![(0, "path")],
            "{path}"
        );
    }
}

#[test]
fn prefix_may_end_inside_a_segment() {
    let index = compile(&[
        cond(None, Some("/a/."), PathMatch::Prefix),
        cond(None, Some("/b/.."), PathMatch::Prefix),
        cond(None, Some("/a%2F"), PathMatch::Prefix),
    ]);
    assert_eq!(index.first_match("h", "/a/.well-known"), Some(0));
    assert_eq!(index.first_match("h", "/b/..x"), Some(1));
    assert_eq!(index.first_match("h", "/a%2Fb"), Some(2));
}

#[test]
fn empty_list_matches_nothing() {
    let index = compile(&[]);
    assert!(index.is_empty());
    assert_eq!(index.len(), 0);
    assert_eq!(index.first_match("a.com", "/"), None);
}

#[test]
fn hostile_host_and_path_do_not_panic() {
    let index = compile(&[
        cond(Some("*.example.com"), Some("/a"), PathMatch::Prefix),
        cond(None, Some("/é.*"), PathMatch::Regex),
        cond(None, Some("/%C3%A9"), PathMatch::Prefix),
    ]);
    let dots = ".".repeat(50_000);
    let labels = "a.".repeat(25_000);
    for host in [dots.as_str(), labels.as_str(), "", ".", "é.example.com"] {
        assert_eq!(index.first_match(host, "/nothing"), None);
    }
    assert_eq!(index.first_match("é.example.com", "/a"), Some(0));
    let long_path = format!("/é{}", "é".repeat(50_000));
    assert_eq!(index.first_match("h", &long_path), Some(1));
    assert_eq!(index.first_match("h", "/\u{e9}"), Some(1));
}

#[test]
fn path_match_uses_lowercase_names_in_config() {
    use serde::de::value::{Error, StrDeserializer};
    use serde::de::IntoDeserializer;
    let parse = |name: &str| {
        let deserializer: StrDeserializer<'_, Error> = name.into_deserializer();
        PathMatch::deserialize(deserializer).ok()
    };
    assert_eq!(parse("exact"), Some(PathMatch::Exact));
    assert_eq!(parse("prefix"), Some(PathMatch::Prefix));
    assert_eq!(parse("regex"), Some(PathMatch::Regex));
    assert_eq!(parse("Regex"), None);
}

#[test]
fn ten_thousand_conditions_answer_correctly() {
    let domains: Vec<String> = (0..2_500).map(|i| format!("svc{i}.example.com")).collect();
    let wildcards: Vec<String> = (0..2_500).map(|i| format!("*.zone{i}.example.com")).collect();
    let prefixes: Vec<String> = (0..2_500).map(|i| format!("/api/{i}/")).collect();
    let exacts: Vec<String> = (0..2_500).map(|i| format!("/exact/{i}")).collect();
    let mut specs = Vec::new();
    for i in 0..2_500 {
        specs.push(cond(Some(&domains[i]), Some(&prefixes[i]), PathMatch::Prefix));
        specs.push(cond(Some(&wildcards[i]), Some(&exacts[i]), PathMatch::Exact));
        specs.push(cond(None, Some(&exacts[i]), PathMatch::Exact));
        specs.push(cond(None, Some(&prefixes[i]), PathMatch::Prefix));
    }
    let index = compile(&specs);
    assert_eq!(index.len(), 10_000);

    assert_eq!(index.first_match("svc7.example.com", "/api/7/x"), Some(28));
    assert_eq!(index.first_match("svc8.example.com", "/api/7/x"), Some(31));
    assert_eq!(
        index.first_match("a.b.zone42.example.com", "/exact/42"),
        Some(169)
    );
    assert_eq!(index.first_match("zone42.example.com", "/exact/42"), Some(170));
    assert_eq!(index.first_match("other.com", "/exact/2499"), Some(9_998));
    assert_eq!(index.first_match("other.com", "/api/2499/"), Some(9_999));
    assert_eq!(
        index.first_match("svc2499.example.com", "/api/2499/x"),
        Some(9_996)
    );
    assert_eq!(index.first_match("svc1.example.com", "/nothing"), None);
    assert_eq!(index.first_match("other.com", "/api/2500/"), None);
}

/// Small deterministic generator: the tests need variety, not randomness.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % n
    }
}

#[test]
fn index_agrees_with_a_linear_scan() {
    let domains = [
        None,
        Some("*"),
        Some("a.example.com"),
        Some("*.example.com"),
        Some("*.a.example.com"),
        Some("b.com"),
    ];
    let paths = ["/", "/a", "/a/b", "/ab", "/a/b/c", "/b", "/%C3%A9", "/a/.x"];
    let regexes = ["/a.*", "/[ab]", "/.*/c", "/é?", "/(a|b)/b"];
    let hosts = [
        "a.example.com",
        "x.a.example.com",
        "example.com",
        "b.com",
        "c.b.com",
        "z.y.example.com",
        "",
    ];
    let mut rng = Lcg(7);
    for _ in 0..50 {
        let specs: Vec<ConditionSpec<'_>> = (0..rng.below(40))
            .map(|_| {
                let domain = domains[rng.below(domains.len())];
                match rng.below(4) {
                    0 => cond(domain, None, PathMatch::Prefix),
                    1 => cond(domain, Some(paths[rng.below(paths.len())]), PathMatch::Exact),
                    2 => cond(domain, Some(paths[rng.below(paths.len())]), PathMatch::Prefix),
                    _ => cond(domain, Some(regexes[rng.below(regexes.len())]), PathMatch::Regex),
                }
            })
            .collect();
        let index = compile(&specs);
        for host in hosts {
            for path in paths.iter().chain(["/a/b/c/d", "/abc", "/zzz"].iter()) {
                let expected = specs.iter().position(|spec| linear_match(spec, host, path));
                assert_eq!(index.first_match(host, path), expected, "{host} {path} {specs:?}");
            }
        }
    }
}

fn linear_match(spec: &ConditionSpec<'_>, host: &str, path: &str) -> bool {
    let domain_ok = match spec.domain {
        None => true,
        Some(domain) => DomainPattern::parse(domain).is_ok_and(|d| d.matches(host)),
    };
    let path_ok = match (spec.path, spec.path_match) {
        (None, _) => true,
        (Some(p), PathMatch::Exact) => path == p,
        (Some(p), PathMatch::Prefix) => path.starts_with(p),
        (Some(p), PathMatch::Regex) => {
            regex::Regex::new(&format!("^(?:{p})$")).is_ok_and(|r| r.is_match(path))
        }
    };
    domain_ok && path_ok
}

proptest::proptest! {
    /// One multi-pattern search names the lowest-numbered regex condition that matches the
    /// whole path: the same answer as trying each pattern alone, in order.
    #[test]
    fn the_first_regex_to_match_is_the_one_named(
        patterns in proptest::collection::vec(
            proptest::sample::select(vec![
                "/a", "/a.*", "/a/[0-9]+", "/[ab]+", ".*", "/b/.*\\.css", "/a/b", "/(a|b)/c",
                "/a/?", "/x{2,3}", "/.*/c", "[^/]*", "/a/[0-9]+/edit",
            ]),
            1..12,
        ),
        path in proptest::sample::select(vec![
            "/a", "/a/", "/a/12", "/a/12/edit", "/ab", "/b/x.css", "/a/b", "/b/c", "/xx", "/xxxx",
            "/", "", "/q/c", "/A",
        ]),
    ) {
        let specs: Vec<ConditionSpec<'_>> = patterns
            .iter()
            .map(|p| cond(None, Some(p), PathMatch::Regex))
            .collect();
        let index = compile(&specs);
        let expected = patterns.iter().position(|p| {
            regex::Regex::new(&format!("^(?:{p})$")).is_ok_and(|re| re.is_match(path))
        });
        proptest::prop_assert_eq!(index.first_match("h.example.com", path), expected);
    }
}
