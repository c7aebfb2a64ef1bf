//! Compiled rules: the configuration's rules turned, once, into the form the decision reads.
//! A `RuleSet` is immutable; a change builds a new one and swaps it in whole (see `RuleSetHandle`),
//! so a `Check` always sees one consistent set.

pub mod conditions;
pub mod domain;
pub mod normalize;

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use url::Url;

use crate::config::{AllowedConfig, AuthorizationMode, DefaultAction, RuleConfig, UpstreamToken};
use conditions::{ConditionIndex, ConditionSpec};
use domain::DomainPattern;
use normalize::normalize_host;

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
}

impl Rule {
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

    /// Whether a bearer token with this audience list is meant for this rule.
    pub fn accepts_audience(&self, aud: &str) -> bool {
        aud == self.client_id || self.audiences.iter().any(|a| a == aud)
    }
}

/// Every rule, compiled, in order.
#[derive(Debug)]
pub struct RuleSet {
    rules: Vec<Arc<Rule>>,
    pub default_action: DefaultAction,
}

impl RuleSet {
    pub fn empty(default_action: DefaultAction) -> RuleSet {
        RuleSet {
            rules: Vec::new(),
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
            Ok(RuleSet {
                rules,
                default_action,
            })
        } else {
            Err(errors)
        }
    }

    /// All rules, enabled or not, in order.
    pub fn all(&self) -> &[Arc<Rule>] {
        &self.rules
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

fn compile_rule(c: &RuleConfig) -> Result<Rule, Vec<RuleError>> {
    let mut errors = Vec::new();
    let mut err = |field: &str, message: String| {
        errors.push(RuleError {
            rule: c.name.clone(),
            field: field.to_string(),
            message,
        });
    };

    if !is_valid_name(&c.name) {
        err("name", format!("`{}` must match [a-z0-9-]{{1,63}}", c.name));
    }

    let web_url = |field: &str, text: &str, err: &mut dyn FnMut(&str, String)| -> Option<Url> {
        match Url::parse(text) {
            Ok(u) if u.scheme() == "https" || u.scheme() == "http" => {
                if u.host_str().is_none() {
                    err(field, format!("`{text}` has no host"));
                    return None;
                }
                if u.scheme() == "http" && !c.insecure_allow_http && !is_loopback_host(&u) {
                    err(
                        field,
                        format!("`{text}` uses http:// on a non-loopback host; use https:// or set insecure_allow_http: true (development only)"),
                    );
                    return None;
                }
                Some(u)
            }
            Ok(_) => {
                err(field, format!("`{text}` must be an http(s) URL"));
                None
            }
            Err(e) => {
                err(field, format!("`{text}` is not a URL: {e}"));
                None
            }
        }
    };

    let issuer_url = web_url("issuer", &c.issuer, &mut err);
    if issuer_url
        .as_ref()
        .is_some_and(|u| u.query().is_some() || u.fragment().is_some())
    {
        err("issuer", "must not have a query or fragment".into());
    }
    let redirect_url = web_url("redirect_url", &c.redirect_url, &mut err);
    if let Some(u) = &redirect_url {
        if u.path() != CALLBACK_PATH {
            err(
                "redirect_url",
                format!("path must be {CALLBACK_PATH}, not `{}`", u.path()),
            );
        }
        if u.query().is_some() || u.fragment().is_some() {
            err("redirect_url", "must not have a query or fragment".into());
        }
    }
    let discovery_url = match &c.discovery_url {
        Some(text) => match Url::parse(text) {
            Ok(u) if (u.scheme() == "http" || u.scheme() == "https") && u.host_str().is_some() => Some(u),
            _ => {
                err("discovery_url", format!("`{text}` is not an http(s) URL"));
                None
            }
        },
        None => issuer_url.as_ref().and_then(|_| {
            let base = c.issuer.trim_end_matches('/');
            Url::parse(&format!("{base}/.well-known/openid-configuration")).ok()
        }),
    };

    if c.client_id.trim().is_empty() {
        err("client_id", "is required".into());
    }
    let secret = match (&c.client_secret, &c.client_secret_file) {
        (Some(s), _) if !s.is_empty() => Some(Secret(s.clone())),
        (None, Some(_)) => None, // the loader resolves the file; an unresolved one was reported there
        _ => {
            err("client_secret", "is required (or client_secret_file)".into());
            None
        }
    };

    let cookie_domain = c.cookie_domain.trim();
    let cookie_domain = if cookie_domain.is_empty() {
        None
    } else {
        let bare = cookie_domain.trim_start_matches('.');
        match DomainPattern::parse(bare) {
            Ok(DomainPattern::Exact(_)) if bare.contains('.') => {
                Some(format!(".{}", bare.to_ascii_lowercase()))
            }
            _ => {
                err(
                    "cookie_domain",
                    format!("`{cookie_domain}` is not a domain like .example.com"),
                );
                None
            }
        }
    };

    let mut scopes: Vec<&str> = vec!["openid"];
    for s in c.scope.split([';', ' ']).map(str::trim).filter(|s| !s.is_empty()) {
        if !s.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\') {
            err("scope", format!("`{s}` is not a valid scope token"));
        } else if !scopes.contains(&s) {
            scopes.push(s);
        }
    }

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
    let conditions = match ConditionIndex::compile(&specs) {
        Ok(ix) => Some(ix),
        Err(list) => {
            for e in list {
                err(
                    &format!("authorization.conditions[{}].{}", e.index, e.field),
                    e.message,
                );
            }
            None
        }
    };

    let mut domains = Vec::new();
    for (i, d) in c.domains.iter().enumerate() {
        match DomainPattern::parse(d) {
            Ok(p) => domains.push(p),
            Err(m) => err(&format!("domains[{i}]"), m),
        }
    }

    let redirect_host = redirect_url
        .as_ref()
        .and_then(Url::host_str)
        .map(normalize_host)
        .unwrap_or_default();
    if let (Some(d), Some(_)) = (&cookie_domain, &redirect_url) {
        let bare = d.trim_start_matches('.');
        if !(redirect_host == bare || redirect_host.ends_with(d.as_str())) {
            err(
                "cookie_domain",
                format!("the redirect_url host `{redirect_host}` is not under `{d}`, so the login cookie would never reach the callback"),
            );
        }
    }

    let post_logout = match &c.post_logout_redirect_url {
        Some(text) => web_url("post_logout_redirect_url", text, &mut err),
        None => redirect_url.as_ref().and_then(|u| u.join("/").ok()),
    };

    for (i, a) in c.audiences.iter().enumerate() {
        if a.trim().is_empty() {
            err(&format!("audiences[{i}]"), "must not be empty".into());
        }
    }
    for (i, e) in c.allowed.email_domains.iter().enumerate() {
        if e.trim().is_empty() || e.contains('@') {
            err(
                &format!("allowed.email_domains[{i}]"),
                format!("`{e}` is not a domain like example.com"),
            );
        }
    }

    let allowed = lower_allowed(&c.allowed, c.allow_unverified_email);
    if !errors.is_empty() {
        return Err(errors);
    }
    match (
        issuer_url,
        discovery_url,
        redirect_url,
        secret,
        conditions,
        post_logout,
    ) {
        (
            Some(_),
            Some(discovery_url),
            Some(redirect_url),
            Some(client_secret),
            Some(conditions),
            Some(post_logout_redirect_url),
        ) => Ok(Rule {
            name: c.name.clone(),
            enabled: c.enabled,
            issuer: c.issuer.clone(),
            discovery_url: discovery_url.clone(),
            redirect_url,
            redirect_host,
            client_id: c.client_id.clone(),
            client_secret,
            cookie_domain,
            scope: scopes.join(" "),
            mode: c.authorization.mode,
            conditions,
            domains,
            upstream_token: c.upstream_token,
            allowed,
            audiences: c.audiences.clone(),
            post_logout_redirect_url,
            provider_key: format!("{}\n{}", c.issuer, discovery_url),
            source: c.clone(),
        }),
        _ => Err(vec![RuleError {
            rule: c.name.clone(),
            field: "(rule)".into(),
            message: "incomplete rule".into(),
        }]),
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
