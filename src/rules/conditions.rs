//! The authorization list (domain + path conditions) of one rule, compiled so that a decision
//! costs a few hash look-ups and one walk along the path whatever the number of conditions, and
//! allocates nothing unless a regex condition matches.
//!
//! Conditions are bucketed by domain (exact hosts, wildcard suffixes, any host); inside a bucket
//! by path kind (none, exact, prefix trie, one multi-pattern regex). Every bucket keeps the lowest
//! condition index it can answer, and the answer is the lowest index over the matching buckets.

use std::collections::HashMap;
use std::fmt;

/// Re-exported from `config`, where the schema lives, for callers that name it here.
pub use crate::config::PathMatch;
use regex::RegexBuilder;
use regex_automata::meta::Regex as MultiRegex;
use regex_automata::{Anchored, Input, MatchKind};

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

/// One entry of an index compiled by `ConditionIndex::compile_keyed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyedCondition<'a> {
    /// What `first_match` answers when this entry is the lowest matching one.
    pub key: usize,
    pub domain: DomainPattern,
    /// Omitted: any path.
    pub path: Option<&'a str>,
    pub path_match: PathMatch,
}

/// Why the condition at `index` was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionError {
    pub index: usize,
    /// `"domain"`, `"path"` or `"match"`; `"key"` for an out-of-order `compile_keyed` entry.
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
        let mut builder = IndexBuilder::default();

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
            builder.add(domain.as_ref(), index, path);
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        builder.build(specs.len())
    }

    /// Compiles conditions under keys the caller chooses, whose domains are already parsed:
    /// `first_match` then answers the lowest matching key. Keys must not decrease (several
    /// entries may share one). The cross-rule index (`rules::route_index`) keys each condition
    /// by its rule's position and its own. `ConditionError::index` is the entry's key.
    pub fn compile_keyed<'a>(
        entries: impl IntoIterator<Item = KeyedCondition<'a>>,
    ) -> Result<ConditionIndex, Vec<ConditionError>> {
        let mut errors = Vec::new();
        let mut builder = IndexBuilder::default();
        let mut count = 0;
        let mut last_key = 0;
        for entry in entries {
            if entry.key < last_key {
                errors.push(ConditionError {
                    index: entry.key,
                    field: "key",
                    message: format!("key {} follows key {last_key}: keys must not decrease", entry.key),
                });
                continue;
            }
            last_key = entry.key;
            let spec = ConditionSpec {
                domain: None,
                path: entry.path,
                path_match: entry.path_match,
            };
            match compile_path(&spec) {
                Ok(path) => builder.add(Some(&entry.domain), entry.key, path),
                Err(message) => errors.push(ConditionError {
                    index: entry.key,
                    field: "path",
                    message,
                }),
            }
            count += 1;
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        builder.build(count)
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

/// Conditions bucketed by domain, while an index is being compiled.
#[derive(Default)]
struct IndexBuilder {
    any_domain: BucketBuilder,
    exact_domains: HashMap<String, BucketBuilder>,
    wildcard_domains: HashMap<String, BucketBuilder>,
}

impl IndexBuilder {
    /// `index` must not be lower than any added before (see `BucketBuilder::add`).
    fn add(&mut self, domain: Option<&DomainPattern>, index: usize, path: PathCondition) {
        let bucket = match domain {
            None | Some(DomainPattern::Any) => &mut self.any_domain,
            Some(DomainPattern::Exact(host)) => self.exact_domains.entry(host.clone()).or_default(),
            Some(DomainPattern::Wildcard(suffix)) => self.wildcard_domains.entry(suffix.clone()).or_default(),
        };
        bucket.add(index, path);
    }

    /// `len` is what `ConditionIndex::len` reports.
    fn build(self, len: usize) -> Result<ConditionIndex, Vec<ConditionError>> {
        let mut errors = Vec::new();
        let longest_wildcard = self.wildcard_domains.keys().map(String::len).max().unwrap_or(0);
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
        let exact_domains = build_all(self.exact_domains);
        let wildcard_domains = build_all(self.wildcard_domains);
        let any_domain = match self.any_domain.build() {
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
            len,
        })
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
                let set = RegexConditions::compile(&patterns).map_err(|error| ConditionError {
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

/// Regex conditions of one bucket, compiled into one multi-pattern regex (the `regex` crate's
/// own engine, `regex-automata`). Every pattern is anchored at both ends, so every match spans
/// the whole path, and leftmost-first semantics then report the lowest-numbered pattern that
/// matches: the first matching condition in one search, however many patterns the bucket
/// holds (a `RegexSet` can only say which patterns match, and finding the first of a thousand
/// costs a thousand).
#[derive(Debug)]
struct RegexConditions {
    set: MultiRegex,
    /// Condition index of each pattern of `set`, ascending.
    indices: Vec<usize>,
    min: usize,
}

impl RegexConditions {
    fn compile(patterns: &[String]) -> Result<MultiRegex, String> {
        // Each pattern alone fits REGEX_SIZE_LIMIT, so their sum bounds the whole.
        let limit = REGEX_SIZE_LIMIT.saturating_mul(patterns.len());
        MultiRegex::builder()
            .configure(
                MultiRegex::config()
                    .match_kind(MatchKind::LeftmostFirst)
                    // As `RegexSetBuilder::size_limit` sets; the lazy DFA's cache keeps the
                    // default bound (2 MiB per searching thread).
                    .nfa_size_limit(Some(limit))
                    .onepass_size_limit(Some(limit)),
            )
            .build_many(patterns)
            .map_err(|error| error.to_string())
    }

    fn first_match(&self, path: &str) -> Option<usize> {
        let found = self.set.search(&Input::new(path).anchored(Anchored::Yes))?;
        self.indices.get(found.pattern().as_usize()).copied()
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
mod tests;
