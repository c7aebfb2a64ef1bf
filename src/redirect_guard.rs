//! Where we may send a browser after a login or sign-out (`rd`): a relative path, or an http(s)
//! URL on a host the rule owns. Anything else (other hosts, `//evil`, `/\evil`, `javascript:`)
//! is refused, so oidc-authz is never an open redirect.

use url::Url;

use crate::rules::domain::DomainPattern;
use crate::rules::normalize::normalize_host;
use crate::rules::Rule;

/// Longest `rd` we consider.
const MAX_RD: usize = 4096;

/// The absolute URL to go to, or `None` when `rd` is not allowed. `base` is the URL the
/// request came to (for relative paths).
pub fn checked_target(rule: &Rule, base: &Url, rd: &str) -> Option<Url> {
    if rd.is_empty() || rd.len() > MAX_RD || rd.chars().any(|c| c.is_control() || c == '\\') {
        return None;
    }
    if rd.starts_with('/') {
        // A relative path only: not protocol-relative (`//host`).
        if rd.starts_with("//") {
            return None;
        }
        let target = base.join(rd).ok()?;
        return (target.host_str() == base.host_str() && target.port() == base.port()).then_some(target);
    }
    let target = Url::parse(rd).ok()?;
    if target.scheme() != "https" && target.scheme() != "http" {
        return None;
    }
    if !target.username().is_empty() || target.password().is_some() {
        return None;
    }
    let host = normalize_host(target.host_str()?);
    let owned = host == rule.redirect_host
        || rule.cookie_domain_covers(&host)
        || rule
            .domains
            .iter()
            .any(|d| !matches!(d, DomainPattern::Any) && d.matches(&host));
    owned.then_some(target)
}

#[cfg(test)]
mod tests;
