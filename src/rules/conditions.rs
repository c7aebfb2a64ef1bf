//! The authorization list (domain + path conditions) of one rule, compiled so that a decision
//! costs a few hash look-ups and one walk along the path whatever the number of conditions, and
//! allocates nothing unless a regex condition matches.
//!
//! Conditions are bucketed by domain (exact hosts, wildcard suffixes, any host); inside a bucket
//! by path kind (none, exact, prefix trie, one `RegexSet`). Every bucket keeps the lowest
//! condition index it can answer, and the answer is the lowest index over the matching buckets.

use std::collections::HashMap;
use std::fmt;

/// Re-exported from `config`, where the schema lives, for callers that name it here.
pub use crate::config::PathMatch;
use regex::{RegexBuilder, RegexSet, RegexSetBuilder};

use super::domain::DomainPattern;
use super::normalize::RequestPath;

/// Compiled-program budget of one regex condition, so a hostile pattern fails to compile instead
/// of exhausting memory.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// One condition as written in the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConditionSpec<'a> {
    /// Omitted: any host.
    pub domain: Option<&'a str>,
    /// Omitted: any path.
    pub path: Option<&'a str>,
    pub path_match: PathMatch,
}

/// Why the condition at `index` was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionError {
    pub index: usize,
    /// `"domain"`, `"path"` or `"match"`.
    pub field: &'static str,
    pub message: String,
}

impl fmt::Display for ConditionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "condition {} ({}): {}", self.index, self.field, self.message)
    }
}

impl std::error::Error for ConditionError {}

/// Compiled authorization list of one rule.
#[derive(Debug)]
pub struct ConditionIndex {
    any_domain: Bucket,
    exact_domains: HashMap<String, Bucket>,
    /// Keyed by suffix including the leading dot: `*.example.com` is `.example.com`.
    wildcard_domains: HashMap<String, Bucket>,
    /// Longest wildcard suffix: longer suffixes of the host are never looked up, which keeps a
    /// hostile host of thousands of labels from costing a quadratic amount of hashing.
    longest_wildcard: usize,
    len: usize,
}

impl ConditionIndex {
    /// Compiles `specs`, or reports every bad condition with its index and field.
    pub fn compile(specs: &[ConditionSpec<'_>]) -> Result<ConditionIndex, Vec<ConditionError>> {
        let mut errors = Vec::new();
        let mut any_domain = BucketBuilder::default();
        let mut exact_domains: HashMap<String, BucketBuilder> = HashMap::new();
        let mut wildcard_domains: HashMap<String, BucketBuilder> = HashMap::new();

        for (index, spec) in specs.iter().enumerate() {
            let domain = spec.domain.map(DomainPattern::parse).transpose();
            let path = compile_path(spec);
            let (domain, path) = match (domain, path) {
                (Ok(domain), Ok(path)) => (domain, path),
                (domain, path) => {
                    if let Err(message) = domain {
                        errors.push(ConditionError {
                            index,
                            field: "domain",
                            message,
                        });
                    }
                    if let Err(message) = path {
                        errors.push(ConditionError {
                            index,
                            field: "path",
                            message,
                        });
                    }
                    continue;
                }
            };
            let bucket = match domain {
                None | Some(DomainPattern::Any) => &mut any_domain,
                Some(DomainPattern::Exact(host)) => exact_domains.entry(host).or_default(),
                Some(DomainPattern::Wildcard(suffix)) => wildcard_domains.entry(suffix).or_default(),
            };
            bucket.add(index, path);
        }
        if !errors.is_empty() {
            return Err(errors);
        }

        let longest_wildcard = wildcard_domains.keys().map(String::len).max().unwrap_or(0);
        let mut build_all = |builders: HashMap<String, BucketBuilder>| {
            builders
                .into_iter()
                .filter_map(|(key, builder)| match builder.build() {
                    Ok(bucket) => Some((key, bucket)),
                    Err(error) => {
                        errors.push(error);
                        None
                    }
                })
                .collect::<HashMap<_, _>>()
        };
        let exact_domains = build_all(exact_domains);
        let wildcard_domains = build_all(wildcard_domains);
        let any_domain = match any_domain.build() {
            Ok(bucket) => bucket,
            Err(error) => {
                errors.push(error);
                Bucket::default()
            }
        };
        if !errors.is_empty() {
            errors.sort_by_key(|error| error.index);
            return Err(errors);
        }
        Ok(ConditionIndex {
            any_domain,
            exact_domains,
            wildcard_domains,
            longest_wildcard,
            len: specs.len(),
        })
    }

    /// Lowest index of a condition matching (`host`, `path`), or None. `host` is normalized;
    /// `path` is one reading of a `RequestPath` (the caller picks which: see `decision`).
    pub fn first_match(&self, host: &str, path: &str) -> Option<usize> {
        self.first_match_with(host, path, ExactSlash::Strict)
    }

    /// As `first_match`, but an `exact` condition also matches the path with one trailing `/`
    /// (`/admin/` matches exact `/admin`), as most backends serve both: for blacklists.
    pub fn first_match_or_trailing_slash(&self, host: &str, path: &str) -> Option<usize> {
        self.first_match_with(host, path, ExactSlash::AlsoWithTrailingSlash)
    }

    fn first_match_with(&self, host: &str, path: &str, slash: ExactSlash) -> Option<usize> {
        let path = MatchPath::new(path, slash);
        let path = &path;
        let mut best = self.any_domain.first_match(path, None);
        if let Some(bucket) = self.exact_domains.get(host) {
            best = bucket.first_match(path, best);
        }
        if !self.wildcard_domains.is_empty() {
            // Label suffixes from the shortest (".com") up; the apex (suffix at 0) never matches.
            for (dot, _) in host.rmatch_indices('.') {
                if dot == 0 || host.len() - dot > self.longest_wildcard {
                    break;
                }
                let bucket = host
                    .get(dot..)
                    .and_then(|suffix| self.wildcard_domains.get(suffix));
                if let Some(bucket) = bucket {
                    best = bucket.first_match(path, best);
                }
            }
        }
        best
    }

    /// Number of conditions compiled.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Whether an `exact` condition also matches the path with one trailing `/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ExactSlash {
    Strict,
    AlsoWithTrailingSlash,
}

/// A path to match, and the spelling `exact` conditions also accept.
struct MatchPath<'p> {
    path: &'p str,
    /// `path` without its one trailing `/`, when that spelling counts too.
    without_slash: Option<&'p str>,
}

impl<'p> MatchPath<'p> {
    fn new(path: &'p str, slash: ExactSlash) -> MatchPath<'p> {
        let without_slash = match slash {
            ExactSlash::Strict => None,
            ExactSlash::AlsoWithTrailingSlash => path.strip_suffix('/').filter(|p| !p.is_empty()),
        };
        MatchPath { path, without_slash }
    }
}

/// A condition's path, checked.
enum PathCondition {
    Any,
    Exact(String),
    Prefix(String),
    Regex(String),
}

fn compile_path(spec: &ConditionSpec<'_>) -> Result<PathCondition, String> {
    let Some(path) = spec.path else {
        return Ok(PathCondition::Any);
    };
    match spec.path_match {
        PathMatch::Exact | PathMatch::Prefix => {
            if !path.starts_with('/') {
                return Err(format!("path {path:?} must start with '/'"));
            }
            // Requests are matched in canonical form, so a path that is not canonical could
            // never match: in a blacklist that would silently leave the path unprotected.
            // A prefix may end inside a segment ("/a/." for "/a/.well-known"), so it is checked
            // with a character after it.
            let is_canonical = match spec.path_match {
                PathMatch::Prefix => {
                    let probe = format!("{path}x");
                    RequestPath::parse(&probe).canonical() == probe
                }
                _ => RequestPath::parse(path).canonical() == path,
            };
            if !is_canonical {
                return Err(format!(
                    "path {path:?} is not in canonical form (requests are matched as {:?}): \
                     decode unreserved %XX escapes, write other escapes in uppercase, \
                     percent-encode non-ASCII characters and spaces, and remove '?', '#', '.', '..' and repeated '/'",
                    RequestPath::parse(path).canonical()
                ));
            }
            Ok(match spec.path_match {
                PathMatch::Exact => PathCondition::Exact(path.to_owned()),
                _ => PathCondition::Prefix(path.to_owned()),
            })
        }
        PathMatch::Regex => {
            // Compiled alone first: a pattern valid on its own has balanced groups, so wrapping
            // it cannot undo the anchors (as "a)|(b" would in "^(?:a)|(b)$").
            RegexBuilder::new(path)
                .size_limit(REGEX_SIZE_LIMIT)
                .build()
                .map_err(|error| format!("invalid regex {path:?}: {error}"))?;
            Ok(PathCondition::Regex(format!("^(?:{path})$")))
        }
    }
}

/// Conditions sharing one domain, while the list is being compiled.
#[derive(Default)]
struct BucketBuilder {
    any_path: Option<usize>,
    exact: HashMap<String, usize>,
    prefixes: PrefixTrie,
    /// (condition index, anchored pattern), in index order.
    regexes: Vec<(usize, String)>,
}

impl BucketBuilder {
    /// Indexes arrive in ascending order, so the first entry for a key is its lowest index.
    fn add(&mut self, index: usize, path: PathCondition) {
        match path {
            PathCondition::Any => {
                self.any_path.get_or_insert(index);
            }
            PathCondition::Exact(path) => {
                self.exact.entry(path).or_insert(index);
            }
            PathCondition::Prefix(prefix) => self.prefixes.insert(&prefix, index),
            PathCondition::Regex(pattern) => self.regexes.push((index, pattern)),
        }
    }

    fn build(self) -> Result<Bucket, ConditionError> {
        let regexes = match self.regexes.first() {
            None => None,
            Some(&(first, _)) => {
                let (indices, patterns): (Vec<usize>, Vec<String>) = self.regexes.into_iter().unzip();
                // Each pattern alone fits REGEX_SIZE_LIMIT, so their sum bounds the set.
                let set = RegexSetBuilder::new(&patterns)
                    .size_limit(REGEX_SIZE_LIMIT.saturating_mul(patterns.len()))
                    .build()
                    .map_err(|error| ConditionError {
                        index: first,
                        field: "path",
                        message: format!("regex conditions of this domain do not compile together: {error}"),
                    })?;
                Some(RegexConditions {
                    set,
                    indices,
                    min: first,
                })
            }
        };
        let prefix_min = self.prefixes.min;
        let min = [
            self.any_path,
            self.exact.values().copied().min(),
            prefix_min,
            regexes.as_ref().map(|r| r.min),
        ]
        .into_iter()
        .flatten()
        .min();
        Ok(Bucket {
            min,
            any_path: self.any_path,
            exact: self.exact,
            prefixes: self.prefixes,
            regexes,
        })
    }
}

/// Conditions sharing one domain.
#[derive(Debug, Default)]
struct Bucket {
    /// Lowest index in the bucket; None when it is empty.
    min: Option<usize>,
    any_path: Option<usize>,
    exact: HashMap<String, usize>,
    prefixes: PrefixTrie,
    regexes: Option<RegexConditions>,
}

impl Bucket {
    /// The lower of `best` and this bucket's lowest matching index. Parts that cannot beat
    /// `best` are not evaluated.
    fn first_match(&self, path: &MatchPath<'_>, best: Option<usize>) -> Option<usize> {
        if !beats(self.min, best) {
            return best;
        }
        let mut best = lower(best, self.any_path);
        best = lower(best, self.exact.get(path.path).copied());
        if let Some(without_slash) = path.without_slash {
            best = lower(best, self.exact.get(without_slash).copied());
        }
        let path = path.path;
        if beats(self.prefixes.min, best) {
            best = lower(best, self.prefixes.first_match(path));
        }
        if let Some(regexes) = &self.regexes {
            if beats(Some(regexes.min), best) {
                best = lower(best, regexes.first_match(path));
            }
        }
        best
    }
}

/// Whether `candidate` could improve on `best`.
fn beats(candidate: Option<usize>, best: Option<usize>) -> bool {
    match (candidate, best) {
        (Some(candidate), Some(best)) => candidate < best,
        (candidate, None) => candidate.is_some(),
        (None, Some(_)) => false,
    }
}

fn lower(a: Option<usize>, b: Option<usize>) -> Option<usize> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Regex conditions of one bucket, compiled into one set.
#[derive(Debug)]
struct RegexConditions {
    set: RegexSet,
    /// Condition index of each pattern of `set`, ascending.
    indices: Vec<usize>,
    min: usize,
}

impl RegexConditions {
    fn first_match(&self, path: &str) -> Option<usize> {
        // `is_match` allocates nothing; `matches` allocates one flag per pattern, so it runs only
        // when there is a match to locate.
        if !self.set.is_match(path) {
            return None;
        }
        let first = self.set.matches(path).iter().next()?;
        self.indices.get(first).copied()
    }
}

/// Byte trie of prefixes: every prefix of a path that is a condition is found in one walk of at
/// most the path's (or the longest prefix's) length, whatever the number of prefixes.
#[derive(Debug)]
struct PrefixTrie {
    nodes: Vec<TrieNode>,
    min: Option<usize>,
}

#[derive(Debug, Default)]
struct TrieNode {
    /// Sorted by byte.
    children: Vec<(u8, usize)>,
    /// Lowest condition index whose prefix ends here.
    index: Option<usize>,
}

impl Default for PrefixTrie {
    fn default() -> Self {
        PrefixTrie {
            nodes: vec![TrieNode::default()],
            min: None,
        }
    }
}

impl PrefixTrie {
    fn insert(&mut self, prefix: &str, index: usize) {
        let mut node = 0;
        for byte in prefix.bytes() {
            let next_id = self.nodes.len();
            let Some(current) = self.nodes.get_mut(node) else {
                return;
            };
            node = match current.children.binary_search_by_key(&byte, |&(b, _)| b) {
                Ok(found) => match current.children.get(found) {
                    Some(&(_, child)) => child,
                    None => return,
                },
                Err(at) => {
                    current.children.insert(at, (byte, next_id));
                    self.nodes.push(TrieNode::default());
                    next_id
                }
            };
        }
        if let Some(end) = self.nodes.get_mut(node) {
            end.index = lower(end.index, Some(index));
            self.min = lower(self.min, Some(index));
        }
    }

    fn first_match(&self, path: &str) -> Option<usize> {
        let mut node = self.nodes.first()?;
        let mut best = node.index;
        for byte in path.bytes() {
            let Ok(found) = node.children.binary_search_by_key(&byte, |&(b, _)| b) else {
                break;
            };
            let Some(next) = node
                .children
                .get(found)
                .and_then(|&(_, child)| self.nodes.get(child))
            else {
                break;
            };
            node = next;
            best = lower(best, node.index);
        }
        best
    }
}

#[cfg(test)]
mod tests {
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
}
