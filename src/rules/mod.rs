//! Compiled rules: the configuration's rules turned, once, into the form the decision reads.
//! A `RuleSet` is immutable; a change builds a new one and swaps it in whole (see `RuleSetHandle`),
//! so a `Check` always sees one consistent set.

pub mod conditions;
pub mod domain;
pub mod normalize;
pub mod route_index;

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use url::Url;

use crate::config::{AllowedConfig, AuthorizationMode, DefaultAction, RuleConfig, UpstreamToken};
use conditions::{ConditionIndex, ConditionSpec};
use domain::DomainPattern;
use normalize::normalize_host;
use route_index::RouteIndex;

/// The only path a redirect URL may have: the listener and `Check` both complete logins there.
pub const CALLBACK_PATH: &str = "/oauth2/callback";

/// A problem in one rule, found while compiling it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    pub rule: String,
    pub field: String,
    pub message: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rule \"{}\": field \"{}\": {}",
            self.rule, self.field, self.message
        )
    }
}

/// A client secret that never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(******)")
    }
}

/// Claim checks applied on every authenticated request.
#[derive(Debug, Clone, Default)]
pub struct Allowed {
    pub emails: Vec<String>,
    pub email_domains: Vec<String>,
    pub groups: Vec<String>,
    /// The rule's `allow_unverified_email`: an email whose `email_verified` claim is `false`
    /// counts for the lists above and for `x-auth-request-email`.
    pub allow_unverified_email: bool,
}

/// One compiled rule.
#[derive(Debug)]
pub struct Rule {
    pub name: String,
    pub enabled: bool,
    pub issuer: String,
    /// Where the discovery document is fetched.
    pub discovery_url: Url,
    pub redirect_url: Url,
    /// Host of `redirect_url`, normalized like request hosts.
    pub redirect_host: String,
    pub client_id: String,
    pub client_secret: Secret,
    /// The cookie domain as configured (`.example.com`), or `None` for host-only cookies.
    pub cookie_domain: Option<String>,
    /// Space-separated, `openid` first.
    pub scope: String,
    pub mode: AuthorizationMode,
    pub conditions: ConditionIndex,
    /// Hosts this rule governs; empty means every host.
    pub domains: Vec<DomainPattern>,
    pub upstream_token: UpstreamToken,
    pub allowed: Allowed,
    /// Audiences accepted on bearer tokens besides `client_id`.
    pub audiences: Vec<String>,
    pub post_logout_redirect_url: Url,
    /// Identifies the provider this rule shares with others (issuer + discovery URL).
    pub provider_key: String,
    /// The rule as written, for the API and `explain`.
    pub source: RuleConfig,
    /// Its `oidc_authz_check_total` counters (`crate::metrics`).
    pub(crate) counters: crate::metrics::RuleCounters,
}

impl Rule {
    /// The rule as `crate::metrics` counts it: its name and its counters.
    pub(crate) fn counted(&self) -> (&str, &crate::metrics::RuleCounters) {
        (&self.name, &self.counters)
    }

    /// Whether this rule governs `host` (already normalized).
    pub fn governs(&self, host: &str) -> bool {
        self.domains.is_empty() || self.domains.iter().any(|d| d.matches(host))
    }

    /// Whether `host` lies under the rule's cookie domain.
    pub fn cookie_domain_covers(&self, host: &str) -> bool {
        match &self.cookie_domain {
            None => false,
            Some(d) => {
                let bare = d.trim_start_matches('.');
                host == bare
                    || (host.len() > bare.len()
                        && host.ends_with(bare)
                        && host.as_bytes()[host.len() - bare.len() - 1] == b'.')
            }
        }
    }
}

/// Every rule, compiled, in order.
#[derive(Debug)]
pub struct RuleSet {
    rules: Vec<Arc<Rule>>,
    /// The enabled rules indexed across rules, for `decision::route`; `None` when the combined
    /// conditions did not compile, and the decision walks the rules instead.
    index: Option<RouteIndex>,
    pub default_action: DefaultAction,
}

impl RuleSet {
    pub fn empty(default_action: DefaultAction) -> RuleSet {
        RuleSet::new(Vec::new(), default_action)
    }

    /// The set of `rules`, indexed.
    fn new(rules: Vec<Arc<Rule>>, default_action: DefaultAction) -> RuleSet {
        let index = match RouteIndex::build(&rules) {
            Ok(index) => Some(index),
            Err(errors) => {
                let first = errors.first().map(ToString::to_string).unwrap_or_default();
                tracing::warn!(
                    errors = errors.len(),
                    first = %first,
                    "the rules' conditions do not compile into one cross-rule index; \
                     each request walks the rules in order instead"
                );
                None
            }
        };
        RuleSet {
            rules,
            index,
            default_action,
        }
    }

    /// Compiles every rule, reporting every problem.
    pub fn compile(configs: &[RuleConfig], default_action: DefaultAction) -> Result<RuleSet, Vec<RuleError>> {
        let mut errors = Vec::new();
        let mut rules = Vec::with_capacity(configs.len());
        let mut names = std::collections::HashSet::new();
        for config in configs {
            if !names.insert(config.name.as_str()) {
                errors.push(RuleError {
                    rule: config.name.clone(),
                    field: "name".into(),
                    message: format!("duplicate rule name `{}`", config.name),
                });
            }
            match compile_rule(config) {
                Ok(rule) => rules.push(Arc::new(rule)),
                Err(mut e) => errors.append(&mut e),
            }
        }
        if errors.is_empty() {
            Ok(RuleSet::new(rules, default_action))
        } else {
            Err(errors)
        }
    }

    /// All rules, enabled or not, in order.
    pub fn all(&self) -> &[Arc<Rule>] {
        &self.rules
    }

    /// The cross-rule index of the enabled rules; `None` when it could not be built (the
    /// decision then walks the rules).
    pub fn route_index(&self) -> Option<&RouteIndex> {
        self.index.as_ref()
    }

    /// The same set without its index, as when it fails to build: for tests of the fallback.
    #[cfg(test)]
    pub(crate) fn without_index(mut self) -> RuleSet {
        self.index = None;
        self
    }

    pub fn enabled(&self) -> impl Iterator<Item = &Arc<Rule>> {
        self.rules.iter().filter(|r| r.enabled)
    }

    pub fn by_name(&self, name: &str) -> Option<&Arc<Rule>> {
        self.rules.iter().find(|r| r.name == name)
    }

    /// The enabled rule whose redirect URL is on `host` (the login completes there).
    pub fn callback_rule(&self, host: &str) -> Option<&Arc<Rule>> {
        self.enabled().find(|r| r.redirect_host == host)
    }

    /// The rule for an `/oauth2/*` request: the first enabled rule whose redirect URL has the
    /// host, else the first whose `domains` matches it.
    pub fn endpoint_rule(&self, host: &str) -> Option<&Arc<Rule>> {
        self.callback_rule(host)
            .or_else(|| self.enabled().find(|r| r.governs(host)))
    }
}

/// The live rule set, swapped atomically when rules change.
#[derive(Debug)]
pub struct RuleSetHandle(ArcSwap<RuleSet>);

impl RuleSetHandle {
    pub fn new(set: RuleSet) -> RuleSetHandle {
        RuleSetHandle(ArcSwap::from_pointee(set))
    }
    pub fn load(&self) -> arc_swap::Guard<Arc<RuleSet>> {
        self.0.load()
    }
    pub fn load_full(&self) -> Arc<RuleSet> {
        self.0.load_full()
    }
    pub fn store(&self, set: RuleSet) {
        self.0.store(Arc::new(set));
    }
}

fn is_valid_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Loopback hosts may use plain http without `insecure_allow_http`.
fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

/// The problems of one rule, in the order they are found.
struct Problems<'a> {
    rule: &'a str,
    found: Vec<RuleError>,
}

impl<'a> Problems<'a> {
    fn new(rule: &'a str) -> Problems<'a> {
        Problems {
            rule,
            found: Vec::new(),
        }
    }

    fn add(&mut self, field: &str, message: String) {
        self.found.push(RuleError {
            rule: self.rule.to_string(),
            field: field.to_string(),
            message,
        });
    }

    fn into_result(self) -> Result<(), Vec<RuleError>> {
        if self.found.is_empty() {
            Ok(())
        } else {
            Err(self.found)
        }
    }
}

/// Compiles one rule: each step checks some fields and reports into `problems`, in the order
/// of the messages users see; the rule is built only when none was found.
fn compile_rule(c: &RuleConfig) -> Result<Rule, Vec<RuleError>> {
    let mut problems = Problems::new(&c.name);
    if !is_valid_name(&c.name) {
        problems.add("name", format!("`{}` must match [a-z0-9-]{{1,63}}", c.name));
    }
    let urls = check_urls(c, &mut problems);
    let client_secret = check_client(c, &mut problems);
    let cookie_domain = check_cookie_domain(c, &mut problems);
    let scope = check_scope(c, &mut problems);
    let conditions = compile_conditions(c, &mut problems);
    let domains = compile_domains(c, &mut problems);
    let redirect_host = urls.redirect_host();
    check_cookie_covers_redirect(cookie_domain.as_deref(), &urls, &redirect_host, &mut problems);
    let post_logout = check_post_logout(c, urls.redirect.as_ref(), &mut problems);
    check_claim_lists(c, &mut problems);
    let allowed = lower_allowed(&c.allowed, c.allow_unverified_email);
    problems.into_result()?;

    let incomplete = || {
        vec![RuleError {
            rule: c.name.clone(),
            field: "(rule)".into(),
            message: "incomplete rule".into(),
        }]
    };
    let Some(urls) = urls.complete(post_logout, redirect_host) else {
        return Err(incomplete());
    };
    let Some(client_secret) = client_secret else {
        return Err(incomplete());
    };
    let Some(conditions) = conditions else {
        return Err(incomplete());
    };
    Ok(Rule {
        name: c.name.clone(),
        enabled: c.enabled,
        issuer: c.issuer.clone(),
        provider_key: format!("{}\n{}", c.issuer, urls.discovery),
        discovery_url: urls.discovery,
        redirect_url: urls.redirect,
        redirect_host: urls.redirect_host,
        client_id: c.client_id.clone(),
        client_secret,
        cookie_domain,
        scope,
        mode: c.authorization.mode,
        conditions,
        domains,
        upstream_token: c.upstream_token,
        allowed,
        audiences: c.audiences.clone(),
        post_logout_redirect_url: urls.post_logout,
        source: c.clone(),
        counters: Default::default(),
    })
}

/// The issuer, redirect and discovery URLs as checked: `None` where a check failed (and was
/// reported), or, for discovery, where it derives from a failed issuer.
struct UrlChecks {
    issuer: Option<Url>,
    redirect: Option<Url>,
    discovery: Option<Url>,
}

/// Every URL of a rule, all valid.
struct CheckedUrls {
    discovery: Url,
    redirect: Url,
    /// Host of `redirect`, normalized like request hosts.
    redirect_host: String,
    post_logout: Url,
}

impl UrlChecks {
    /// The redirect URL's host, normalized; empty when it is invalid.
    fn redirect_host(&self) -> String {
        self.redirect
            .as_ref()
            .and_then(Url::host_str)
            .map(normalize_host)
            .unwrap_or_default()
    }

    fn complete(self, post_logout: Option<Url>, redirect_host: String) -> Option<CheckedUrls> {
        self.issuer.as_ref()?;
        Some(CheckedUrls {
            discovery: self.discovery?,
            redirect: self.redirect?,
            redirect_host,
            post_logout: post_logout?,
        })
    }
}

/// An http(s) URL with a host; plain http only on loopback or with `insecure_allow_http`.
fn web_url(field: &str, text: &str, insecure_allow_http: bool, problems: &mut Problems<'_>) -> Option<Url> {
    match Url::parse(text) {
        Ok(u) if u.scheme() == "https" || u.scheme() == "http" => {
            if u.host_str().is_none() {
                problems.add(field, format!("`{text}` has no host"));
                return None;
            }
            if u.scheme() == "http" && !insecure_allow_http && !is_loopback_host(&u) {
                problems.add(
                    field,
                    format!("`{text}` uses http:// on a non-loopback host; use https:// or set insecure_allow_http: true (development only)"),
                );
                return None;
            }
            Some(u)
        }
        Ok(_) => {
            problems.add(field, format!("`{text}` must be an http(s) URL"));
            None
        }
        Err(e) => {
            problems.add(field, format!("`{text}` is not a URL: {e}"));
            None
        }
    }
}

/// `issuer`, `redirect_url` (on the callback path) and `discovery_url` (or the issuer's).
fn check_urls(c: &RuleConfig, problems: &mut Problems<'_>) -> UrlChecks {
    let issuer = web_url("issuer", &c.issuer, c.insecure_allow_http, problems);
    if issuer
        .as_ref()
        .is_some_and(|u| u.query().is_some() || u.fragment().is_some())
    {
        problems.add("issuer", "must not have a query or fragment".into());
    }
    let redirect = web_url("redirect_url", &c.redirect_url, c.insecure_allow_http, problems);
    if let Some(u) = &redirect {
        if u.path() != CALLBACK_PATH {
            problems.add(
                "redirect_url",
                format!("path must be {CALLBACK_PATH}, not `{}`", u.path()),
            );
        }
        if u.query().is_some() || u.fragment().is_some() {
            problems.add("redirect_url", "must not have a query or fragment".into());
        }
    }
    let discovery = match &c.discovery_url {
        Some(text) => match Url::parse(text) {
            Ok(u) if (u.scheme() == "http" || u.scheme() == "https") && u.host_str().is_some() => Some(u),
            _ => {
                problems.add("discovery_url", format!("`{text}` is not an http(s) URL"));
                None
            }
        },
        None => issuer.as_ref().and_then(|_| {
            let base = c.issuer.trim_end_matches('/');
            Url::parse(&format!("{base}/.well-known/openid-configuration")).ok()
        }),
    };
    UrlChecks {
        issuer,
        redirect,
        discovery,
    }
}

/// `client_id` and the secret; `None` when the secret is missing.
fn check_client(c: &RuleConfig, problems: &mut Problems<'_>) -> Option<Secret> {
    if c.client_id.trim().is_empty() {
        problems.add("client_id", "is required".into());
    }
    match (&c.client_secret, &c.client_secret_file) {
        (Some(s), _) if !s.is_empty() => Some(Secret(s.clone())),
        (None, Some(_)) => None, // the loader resolves the file; an unresolved one was reported there
        _ => {
            problems.add("client_secret", "is required (or client_secret_file)".into());
            None
        }
    }
}

/// `cookie_domain` as `.example.com`, or `None` for host-only cookies (or when invalid).
fn check_cookie_domain(c: &RuleConfig, problems: &mut Problems<'_>) -> Option<String> {
    let cookie_domain = c.cookie_domain.trim();
    if cookie_domain.is_empty() {
        return None;
    }
    let bare = cookie_domain.trim_start_matches('.');
    match DomainPattern::parse(bare) {
        Ok(DomainPattern::Exact(_)) if bare.contains('.') => Some(format!(".{}", bare.to_ascii_lowercase())),
        _ => {
            problems.add(
                "cookie_domain",
                format!("`{cookie_domain}` is not a domain like .example.com"),
            );
            None
        }
    }
}

/// The scopes, space-separated, `openid` first, each once.
fn check_scope(c: &RuleConfig, problems: &mut Problems<'_>) -> String {
    let mut scopes: Vec<&str> = vec!["openid"];
    for s in c.scope.split([';', ' ']).map(str::trim).filter(|s| !s.is_empty()) {
        if !s.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\') {
            problems.add("scope", format!("`{s}` is not a valid scope token"));
        } else if !scopes.contains(&s) {
            scopes.push(s);
        }
    }
    scopes.join(" ")
}

/// The authorization list, indexed; `None` when a condition is invalid.
fn compile_conditions(c: &RuleConfig, problems: &mut Problems<'_>) -> Option<ConditionIndex> {
    let specs: Vec<ConditionSpec<'_>> = c
        .authorization
        .conditions
        .iter()
        .map(|k| ConditionSpec {
            domain: k.domain.as_deref(),
            path: k.path.as_deref(),
            path_match: k.path_match,
        })
        .collect();
    match ConditionIndex::compile(&specs) {
        Ok(ix) => Some(ix),
        Err(list) => {
            for e in list {
                problems.add(
                    &format!("authorization.conditions[{}].{}", e.index, e.field),
                    e.message,
                );
            }
            None
        }
    }
}

/// The rule's `domains`, the valid ones.
fn compile_domains(c: &RuleConfig, problems: &mut Problems<'_>) -> Vec<DomainPattern> {
    let mut domains = Vec::new();
    for (i, d) in c.domains.iter().enumerate() {
        match DomainPattern::parse(d) {
            Ok(p) => domains.push(p),
            Err(m) => problems.add(&format!("domains[{i}]"), m),
        }
    }
    domains
}

/// The login cookie is set on the callback: its domain must cover the redirect URL's host.
fn check_cookie_covers_redirect(
    cookie_domain: Option<&str>,
    urls: &UrlChecks,
    redirect_host: &str,
    problems: &mut Problems<'_>,
) {
    if let (Some(d), Some(_)) = (cookie_domain, &urls.redirect) {
        let bare = d.trim_start_matches('.');
        if !(redirect_host == bare || redirect_host.ends_with(d)) {
            problems.add(
                "cookie_domain",
                format!("the redirect_url host `{redirect_host}` is not under `{d}`, so the login cookie would never reach the callback"),
            );
        }
    }
}

/// `post_logout_redirect_url`, or the root of the redirect URL's site.
fn check_post_logout(c: &RuleConfig, redirect: Option<&Url>, problems: &mut Problems<'_>) -> Option<Url> {
    match &c.post_logout_redirect_url {
        Some(text) => web_url("post_logout_redirect_url", text, c.insecure_allow_http, problems),
        None => redirect.and_then(|u| u.join("/").ok()),
    }
}

/// `audiences` and `allowed.email_domains` entries.
fn check_claim_lists(c: &RuleConfig, problems: &mut Problems<'_>) {
    for (i, a) in c.audiences.iter().enumerate() {
        if a.trim().is_empty() {
            problems.add(&format!("audiences[{i}]"), "must not be empty".into());
        }
    }
    for (i, e) in c.allowed.email_domains.iter().enumerate() {
        if e.trim().is_empty() || e.contains('@') {
            problems.add(
                &format!("allowed.email_domains[{i}]"),
                format!("`{e}` is not a domain like example.com"),
            );
        }
    }
}

fn lower_allowed(a: &AllowedConfig, allow_unverified_email: bool) -> Allowed {
    Allowed {
        emails: a.emails.iter().map(|e| e.trim().to_ascii_lowercase()).collect(),
        email_domains: a
            .email_domains
            .iter()
            .map(|d| d.trim().trim_start_matches('.').to_ascii_lowercase())
            .collect(),
        groups: a.groups.clone(),
        allow_unverified_email,
    }
}

#[cfg(test)]
mod tests;
