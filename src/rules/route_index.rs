//! The cross-rule index the decision reads: which enabled rule comes first for a request, in time
//! independent of the number of rules and conditions. Walking the rules one by one costs a
//! condition look-up per rule; with a thousand blacklist rules that walk dominates `Check`.
//!
//! Two `ConditionIndex`es, compiled once with the `RuleSet`:
//! - every condition of every enabled blacklist rule, keyed by a sequence number ordered by (rule
//!   position, condition index). The rule's `domains` are folded into each condition by
//!   intersecting domain patterns, one entry per (rule domain, condition) pair, so an entry
//!   matches exactly when the rule governs the host and the condition matches. The lowest
//!   matching key is then the first blacklist rule, in order, with a matching condition, and its
//!   lowest matching condition: what the walk finds.
//! - the enabled whitelist rules' `domains`, path-less, keyed by rule position: the first
//!   whitelist rule governing a host.
//!
//! `decision::route` combines them (a blacklist match decides when its rule comes before that
//! whitelist rule); `decision::route_linear` is the walk it must agree with.

use std::sync::Arc;

use crate::config::AuthorizationMode;

use super::conditions::{ConditionError, ConditionIndex, KeyedCondition};
use super::domain::DomainPattern;
use super::Rule;

/// The enabled rules of a `RuleSet`, indexed across rules. Positions are indexes into
/// `RuleSet::all`.
#[derive(Debug)]
pub struct RouteIndex {
    /// Every (rule domain, condition) pair of the enabled blacklist rules, keyed by sequence number.
    blacklist: ConditionIndex,
    /// Sequence number → (rule position, condition index).
    origins: Vec<(usize, usize)>,
    /// The enabled whitelist rules' domains, path-less, keyed by rule position.
    whitelist_hosts: ConditionIndex,
}

impl RouteIndex {
    /// Indexes the enabled rules of `rules` (all of a `RuleSet`'s rules, in order). Fails only
    /// when the combined conditions do not compile together (the regex conditions of one domain
    /// form one `RegexSet`); the caller then walks the rules instead.
    pub fn build(rules: &[Arc<Rule>]) -> Result<RouteIndex, Vec<ConditionError>> {
        let mut origins = Vec::new();
        let mut blacklist_entries = Vec::new();
        let mut whitelist_entries = Vec::new();
        for (position, rule) in rules.iter().enumerate().filter(|(_, rule)| rule.enabled) {
            let rule_domains = governed_domains(rule);
            match rule.mode {
                AuthorizationMode::Whitelist => {
                    for domain in rule_domains {
                        whitelist_entries.push(KeyedCondition {
                            key: position,
                            domain: domain.clone(),
                            path: None,
                            path_match: Default::default(),
                        });
                    }
                }
                AuthorizationMode::Blacklist => {
                    for (index, condition) in rule.source.authorization.conditions.iter().enumerate() {
                        let key = origins.len();
                        origins.push((position, index));
                        let condition_domain = match condition.domain.as_deref().map(DomainPattern::parse) {
                            None => DomainPattern::Any,
                            Some(Ok(domain)) => domain,
                            Some(Err(message)) => {
                                return Err(vec![ConditionError {
                                    index: key,
                                    field: "domain",
                                    message,
                                }])
                            }
                        };
                        let mut seen: Vec<DomainPattern> = Vec::new();
                        for rule_domain in rule_domains {
                            let Some(domain) = intersect(rule_domain, &condition_domain) else {
                                continue;
                            };
                            if seen.contains(&domain) {
                                continue;
                            }
                            seen.push(domain.clone());
                            blacklist_entries.push(KeyedCondition {
                                key,
                                domain,
                                path: condition.path.as_deref(),
                                path_match: condition.path_match,
                            });
                        }
                    }
                }
            }
        }
        Ok(RouteIndex {
            blacklist: ConditionIndex::compile_keyed(blacklist_entries)?,
            origins,
            whitelist_hosts: ConditionIndex::compile_keyed(whitelist_entries)?,
        })
    }

    /// Position of the first enabled whitelist rule governing `host` (normalized).
    pub fn first_whitelist(&self, host: &str) -> Option<usize> {
        self.whitelist_hosts.first_match(host, "/")
    }

    /// The first enabled blacklist rule governing `host` with a condition matching one of
    /// `readings` (as `ConditionIndex::first_match_or_trailing_slash` matches), and its lowest
    /// such condition: (rule position, condition index).
    pub fn first_blacklist<'p>(
        &self,
        host: &str,
        readings: impl Iterator<Item = &'p str>,
    ) -> Option<(usize, usize)> {
        let key = readings
            .filter_map(|reading| self.blacklist.first_match_or_trailing_slash(host, reading))
            .min()?;
        self.origins.get(key).copied()
    }
}

/// A rule's `domains`; empty means every host.
fn governed_domains(rule: &Rule) -> &[DomainPattern] {
    const EVERY_HOST: &[DomainPattern] = &[DomainPattern::Any];
    if rule.domains.is_empty() {
        EVERY_HOST
    } else {
        &rule.domains
    }
}

/// The pattern matching exactly the hosts both `a` and `b` match, or `None` when no host does.
/// Wildcard suffixes start with '.', so two of them overlap only when one ends with the other.
pub(crate) fn intersect(a: &DomainPattern, b: &DomainPattern) -> Option<DomainPattern> {
    match (a, b) {
        (DomainPattern::Any, other) | (other, DomainPattern::Any) => Some(other.clone()),
        (DomainPattern::Exact(host), other) | (other, DomainPattern::Exact(host)) => {
            other.matches(host).then(|| DomainPattern::Exact(host.clone()))
        }
        (DomainPattern::Wildcard(x), DomainPattern::Wildcard(y)) => {
            if x.ends_with(y.as_str()) {
                Some(DomainPattern::Wildcard(x.clone()))
            } else if y.ends_with(x.as_str()) {
                Some(DomainPattern::Wildcard(y.clone()))
            } else {
                None
            }
        }
    }
}

#[cfg(test)]
mod tests;
