//! The routing half of the decision: which rule governs a request, and whether it is public,
//! needs a login, or falls to `default_action`. A pure function of the compiled rules and the
//! request's host and path; credentials are checked afterwards by `authorize`.

use serde::Serialize;

use crate::config::{AuthorizationMode, DefaultAction, PathMatch};
use crate::rules::domain::DomainPattern;
use crate::rules::normalize::{parse_host, RequestPath};
use crate::rules::{Rule, RuleSet, CALLBACK_PATH};

/// What the rules say about one request, before credentials are looked at.
#[derive(Debug, Clone, Copy)]
pub enum Route<'a> {
    /// Step 1: the request is an enabled rule's redirect URL; complete the login.
    Callback(&'a Rule),
    /// A whitelist condition matched: allow without login.
    Public { rule: &'a Rule, condition: usize },
    /// Credentials for this rule are required. `condition` is the blacklist condition that
    /// matched, or `None` when a whitelist rule matched nothing.
    Login {
        rule: &'a Rule,
        condition: Option<usize>,
    },
    /// No rule decided.
    Default(DefaultAction),
}

/// Decides which rule governs a request. `host` is normalized (lowercase, no port).
///
/// The first enabled rule governing the host decides, in order: a whitelist rule always, a
/// blacklist rule when one of its conditions matches. The rule set's cross-rule index
/// (`rules::route_index`) finds that rule without walking the rules; a set without one (its
/// conditions did not compile together) is walked, as `route_linear` does.
pub fn route<'a>(rules: &'a RuleSet, host: &str, path: &RequestPath) -> Route<'a> {
    if let Some(callback) = callback(rules, host, path) {
        return callback;
    }
    let Some(index) = rules.route_index() else {
        return walk(rules, host, path);
    };
    let whitelist = index.first_whitelist(host);
    if let Some((position, condition)) = index.first_blacklist(host, path.readings()) {
        if whitelist.is_none_or(|first| position < first) {
            return match rules.all().get(position) {
                Some(rule) => Route::Login {
                    rule,
                    condition: Some(condition),
                },
                // An index that names no rule is broken: decide as the walk does.
                None => walk(rules, host, path),
            };
        }
    }
    match whitelist {
        None => Route::Default(rules.default_action),
        Some(position) => match rules.all().get(position) {
            Some(rule) => whitelist_route(rule, host, path),
            None => walk(rules, host, path),
        },
    }
}

/// `route` by walking every enabled rule in order: the reference the index must agree with
/// (property tests, the `rules_scale` benchmark), and the fallback when a set has no index.
#[doc(hidden)]
pub fn route_linear<'a>(rules: &'a RuleSet, host: &str, path: &RequestPath) -> Route<'a> {
    match callback(rules, host, path) {
        Some(callback) => callback,
        None => walk(rules, host, path),
    }
}

/// Step 1: the request is an enabled rule's redirect URL.
fn callback<'a>(rules: &'a RuleSet, host: &str, path: &RequestPath) -> Option<Route<'a>> {
    if path.canonical() == CALLBACK_PATH {
        return rules.callback_rule(host).map(|rule| Route::Callback(rule));
    }
    None
}

/// A whitelist rule governing the host decides: public when a condition matches, else login.
fn whitelist_route<'a>(rule: &'a Rule, host: &str, path: &RequestPath) -> Route<'a> {
    // A path a backend may read another way is never public: its canonical form could look
    // public while the backend serves a protected resource.
    let matched = (!path.is_ambiguous())
        .then(|| rule.conditions.first_match(host, path.canonical()))
        .flatten();
    match matched {
        Some(condition) => Route::Public { rule, condition },
        None => Route::Login {
            rule,
            condition: None,
        },
    }
}

/// Every enabled rule in order, after the callback check.
fn walk<'a>(rules: &'a RuleSet, host: &str, path: &RequestPath) -> Route<'a> {
    for rule in rules.enabled() {
        if !rule.governs(host) {
            continue;
        }
        match rule.mode {
            AuthorizationMode::Whitelist => return whitelist_route(rule, host, path),
            // Any reading a backend may make that falls under a condition asks for a login.
            AuthorizationMode::Blacklist => {
                let matched = path
                    .readings()
                    .filter_map(|reading| rule.conditions.first_match_or_trailing_slash(host, reading))
                    .min();
                if let Some(condition) = matched {
                    return Route::Login {
                        rule,
                        condition: Some(condition),
                    };
                }
            }
        }
    }
    Route::Default(rules.default_action)
}

/// What `explain` reports: the action, the deciding rule and condition, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation {
    pub action: &'static str,
    pub rule: Option<String>,
    pub condition: Option<usize>,
    pub reason: String,
}

impl Route<'_> {
    pub fn explain(&self) -> Explanation {
        match *self {
            Route::Callback(rule) => Explanation {
                action: "login",
                rule: Some(rule.name.clone()),
                condition: None,
                reason: format!(
                    "this is rule `{}`'s redirect URL: the login completes here",
                    rule.name
                ),
            },
            Route::Public { rule, condition } => Explanation {
                action: "allow",
                rule: Some(rule.name.clone()),
                condition: Some(condition),
                reason: format!(
                    "whitelist condition {condition} of rule `{}` matches{}: public, no login",
                    rule.name,
                    describe_condition(rule, condition)
                ),
            },
            Route::Login {
                rule,
                condition: Some(c),
            } => Explanation {
                action: "login",
                rule: Some(rule.name.clone()),
                condition: Some(c),
                reason: format!(
                    "blacklist condition {c} of rule `{}` matches{}: login required",
                    rule.name,
                    describe_condition(rule, c)
                ),
            },
            Route::Login {
                rule,
                condition: None,
            } => Explanation {
                action: "login",
                rule: Some(rule.name.clone()),
                condition: None,
                reason: format!(
                    "rule `{}` (whitelist) governs this host and no condition matches: login required",
                    rule.name
                ),
            },
            Route::Default(action) => Explanation {
                action: match action {
                    DefaultAction::Allow => "allow",
                    DefaultAction::Deny => "deny",
                },
                rule: None,
                condition: None,
                reason: format!(
                    "no enabled rule decided: default_action is {}",
                    match action {
                        DefaultAction::Allow => "allow",
                        DefaultAction::Deny => "deny",
                    }
                ),
            },
        }
    }
}

fn describe_condition(rule: &Rule, index: usize) -> String {
    match rule.source.authorization.conditions.get(index) {
        Some(c) => format!(
            " (domain {}, path {} {})",
            c.domain.as_deref().unwrap_or("any"),
            match c.path_match {
                PathMatch::Exact => "exact",
                PathMatch::Prefix => "prefix",
                PathMatch::Regex => "regex",
            },
            c.path.as_deref().unwrap_or("any"),
        ),
        None => String::new(),
    }
}

/// Explains the decision for a URL, as `oidc-authz explain` and the admin API show it. The host
/// and path are taken as written, not as a URL parser would rewrite them (it drops userinfo,
/// resolves dot-segments and turns `\` into `/`), so explain sees exactly what `Check` sees.
pub fn explain_url(rules: &RuleSet, url: &str) -> Result<Explanation, String> {
    let (scheme, after_scheme) = url.split_once("://").ok_or_else(|| {
        format!(
            "`{}` is not an absolute URL (scheme://host/path)",
            url.escape_debug()
        )
    })?;
    if scheme.is_empty()
        || !scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    {
        return Err(format!("`{}` has no valid scheme", url.escape_debug()));
    }
    let authority_end = after_scheme.find(['/', '?', '#']).unwrap_or(after_scheme.len());
    let (authority, rest) = after_scheme.split_at(authority_end);
    let raw_path = match rest.split('#').next().unwrap_or("") {
        "" => "/".to_string(),
        p if p.starts_with('?') => format!("/{p}"),
        p => p.to_string(),
    };
    let host = match parse_host(authority) {
        Ok(host) => host,
        Err(why) => {
            return Ok(Explanation {
                action: "deny",
                rule: None,
                condition: None,
                reason: format!(
                    "the host `{}` is not a DNS name or IP literal ({why}): Check answers 400",
                    authority.escape_debug()
                ),
            })
        }
    };
    let path = RequestPath::parse(&raw_path);
    let route = route(rules, &host, &path);
    let mut explanation = route.explain();
    if let Route::Login { condition: None, .. } = route {
        if path.is_ambiguous() {
            explanation.reason.push_str(&format!(
                "; the path holds {}, which backends read in more than one way, so it is never public",
                path.ambiguity().names().join(" and ")
            ));
        }
    }
    Ok(explanation)
}

/// With `default_action: allow`, a request to a host that no enabled rule governs is allowed
/// without a login. When that leaves hosts unprotected (no enabled rule governs every host), says
/// which hosts the rules do govern, so `validate` can warn.
pub fn unprotected_hosts(rules: &RuleSet) -> Option<String> {
    if rules.default_action != DefaultAction::Allow {
        return None;
    }
    let mut governed: Vec<&str> = Vec::new();
    for rule in rules.enabled() {
        if rule.domains.is_empty() || rule.domains.iter().any(|d| matches!(d, DomainPattern::Any)) {
            return None;
        }
        for domain in &rule.source.domains {
            if !governed.contains(&domain.as_str()) {
                governed.push(domain);
            }
        }
    }
    Some(if governed.is_empty() {
        "default_action: allow and no enabled rule: every request is allowed without a login".into()
    } else {
        format!(
            "default_action: allow leaves every host except {} unprotected: \
             requests to any other host reach their backend without a login \
             (set default_action: deny, or give a rule no `domains`)",
            governed.join(", ")
        )
    })
}

#[cfg(test)]
mod tests;
