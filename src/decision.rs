//! The routing half of the decision: which rule governs a request, and whether it is public,
//! needs a login, or falls to `default_action`. A pure function of the compiled rules and the
//! request's host and path; credentials are checked afterwards by `authenticate`.

use serde::Serialize;

use crate::config::{AuthorizationMode, DefaultAction};
use crate::rules::normalize::RequestPath;
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
pub fn route<'a>(rules: &'a RuleSet, host: &str, path: &RequestPath) -> Route<'a> {
    if path.canonical() == CALLBACK_PATH {
        if let Some(rule) = rules.callback_rule(host) {
            return Route::Callback(rule);
        }
    }
    for rule in rules.enabled() {
        if !rule.governs(host) {
            continue;
        }
        match rule.mode {
            AuthorizationMode::Whitelist => {
                // An encoded separator could make a path look public to us and private to the
                // backend: such a path is never public.
                if !path.has_encoded_separator() {
                    if let Some(condition) = rule.conditions.first_match(host, path.canonical()) {
                        return Route::Public { rule, condition };
                    }
                }
                return Route::Login {
                    rule,
                    condition: None,
                };
            }
            AuthorizationMode::Blacklist => {
                if let Some(condition) = rule.conditions.first_match(host, path.decoded()) {
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
                crate::rules::conditions::PathMatch::Exact => "exact",
                crate::rules::conditions::PathMatch::Prefix => "prefix",
                crate::rules::conditions::PathMatch::Regex => "regex",
            },
            c.path.as_deref().unwrap_or("any"),
        ),
        None => String::new(),
    }
}

/// Explains the decision for a URL, as `oidc-authz explain` and the admin API show it.
pub fn explain_url(rules: &RuleSet, url: &str) -> Result<Explanation, String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("`{url}` is not an absolute URL: {e}"))?;
    let host = parsed.host_str().ok_or_else(|| format!("`{url}` has no host"))?;
    let host = crate::rules::normalize::normalize_host(host);
    // Take the path as written, not as `Url` rewrote it (it resolves dot-segments and turns `\`
    // into `/`), so explain sees exactly what Check would see.
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let raw_path = after_scheme
        .find(['/', '?'])
        .map_or("/", |i| &after_scheme[i..])
        .split('#')
        .next()
        .unwrap_or("/")
        .to_string();
    let path = RequestPath::parse(&raw_path);
    Ok(route(rules, &host, &path).explain())
}

#[cfg(test)]
mod tests;
