//! Who a request is: the identity taken from a verified token's claims, and the `allowed`
//! claim checks applied to it on every request.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::rules::Allowed;

/// The identity headers' source. Built only from a verified token.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_username: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Session id at the IdP, for back-channel logout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
}

/// Bounds on what a token may make us carry around.
const MAX_GROUPS: usize = 256;
const MAX_CLAIM_LEN: usize = 1024;

impl Identity {
    /// Takes the identity claims of a verified token. Values that are not strings, too long or
    /// hold control characters (they would become header values) are left out.
    pub fn from_claims(claims: &serde_json::Map<String, Value>) -> Option<Identity> {
        let text = |k: &str| {
            claims
                .get(k)
                .and_then(Value::as_str)
                .filter(|s| header_safe(s))
                .map(str::to_string)
        };
        let sub = text("sub")?;
        let groups = match claims.get("groups") {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .filter(|s| header_safe(s) && !s.contains(','))
                .take(MAX_GROUPS)
                .map(str::to_string)
                .collect(),
            Some(Value::String(s)) if header_safe(s) => vec![s.clone()],
            _ => Vec::new(),
        };
        Some(Identity {
            sub,
            email: text("email"),
            preferred_username: text("preferred_username"),
            groups,
            sid: text("sid"),
        })
    }
}

fn header_safe(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_CLAIM_LEN && !s.chars().any(|c| c.is_control())
}

/// Why an authenticated user is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotAllowed {
    /// The failed requirement, e.g. `allowed.groups`.
    pub requirement: &'static str,
    pub detail: String,
}

/// Applies the rule's `allowed` checks. Every non-empty list must be satisfied.
pub fn check_allowed(allowed: &Allowed, id: &Identity) -> Result<(), NotAllowed> {
    let email = id.email.as_deref().map(str::to_ascii_lowercase);
    if !allowed.emails.is_empty()
        && !email
            .as_ref()
            .is_some_and(|e| allowed.emails.iter().any(|a| a == e))
    {
        return Err(NotAllowed {
            requirement: "allowed.emails",
            detail: "your email address is not on this rule's list".into(),
        });
    }
    if !allowed.email_domains.is_empty() {
        let domain = email
            .as_deref()
            .and_then(|e| e.rsplit_once('@'))
            .map(|(_, d)| d.to_string());
        if !domain.is_some_and(|d| allowed.email_domains.contains(&d)) {
            return Err(NotAllowed {
                requirement: "allowed.email_domains",
                detail: "your email domain is not allowed by this rule".into(),
            });
        }
    }
    if !allowed.groups.is_empty() && !id.groups.iter().any(|g| allowed.groups.contains(g)) {
        return Err(NotAllowed {
            requirement: "allowed.groups",
            detail: "you are in none of the groups this rule requires".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn id(email: &str, groups: &[&str]) -> Identity {
        Identity {
            sub: "u".into(),
            email: Some(email.into()),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn empty_allowed_lets_everyone_in() {
        assert!(check_allowed(&Allowed::default(), &id("a@b.c", &[])).is_ok());
    }

    #[test]
    fn email_domain_and_group_lists_are_each_required() {
        let a = Allowed {
            email_domains: vec!["example.com".into()],
            groups: vec!["ops".into()],
            ..Default::default()
        };
        assert!(check_allowed(&a, &id("x@EXAMPLE.com", &["ops"])).is_ok());
        assert_eq!(
            check_allowed(&a, &id("x@evil.com", &["ops"]))
                .unwrap_err()
                .requirement,
            "allowed.email_domains"
        );
        assert_eq!(
            check_allowed(&a, &id("x@example.com", &["dev"]))
                .unwrap_err()
                .requirement,
            "allowed.groups"
        );
    }

    #[test]
    fn claims_with_control_characters_are_dropped() {
        let c = json!({"sub": "u1", "email": "a@b\r\nx-evil: 1", "groups": ["a", "b\n", 3, "c,d"]});
        let i = Identity::from_claims(c.as_object().unwrap()).unwrap();
        assert_eq!(i.email, None);
        assert_eq!(i.groups, vec!["a".to_string()]);
    }
}
